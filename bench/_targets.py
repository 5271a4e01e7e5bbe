"""The eval targets of issue 5 (dev split), and whether a set's figures meet them."""

from __future__ import annotations

from typing import Final, NamedTuple

from schemas.evaluation import EvalReport

__all__ = ["TARGETS", "Target", "against_target"]


class Target(NamedTuple):
    coverage: float
    wrong_rate: float | None
    rejection: dict[str, float]
    """Minimum rejection per ``oos_type`` (``"all"``: over every out-of-scope query)."""


TARGETS: Final = {
    "clinc150": Target(0.93, 0.02, {"all": 0.93}),
    "banking77": Target(0.90, 0.03, {}),
    "banking77_oos": Target(0.80, None, {"in_domain": 0.80, "out_of_domain": 0.95}),
    "stackfaq": Target(0.88, 0.04, {"heldout_faq": 0.75}),
}


def against_target(name: str, report: EvalReport) -> str:
    """One line: each targeted figure, its target, and met or missed."""
    target = TARGETS.get(name)
    if target is None:
        return f"{name}: no target in issue 5"
    parts = [_check("coverage", report.coverage, target.coverage, at_least=True)]
    if target.wrong_rate is not None:
        parts.append(_check("wrong", report.wrong_rate, target.wrong_rate, at_least=False))
    for kind, floor in target.rejection.items():
        got = report.rejection if kind == "all" else report.rejection_by_type.get(kind)
        label = "rejection" if kind == "all" else f"rejection {kind}"
        parts.append(_check(label, got, floor, at_least=True))
    return f"{name} vs issue 5 targets: " + "; ".join(parts)


def _check(label: str, got: float | None, target: float, *, at_least: bool) -> str:
    if got is None:
        return f"{label} — (target {'≥' if at_least else '≤'} {target:.0%})"
    met = got >= target if at_least else got <= target
    sign = "≥" if at_least else "≤"
    return f"{label} {got:.1%} (target {sign} {target:.0%}: {'met' if met else 'missed'})"
