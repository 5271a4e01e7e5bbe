"""Stage 10a — gates: what a snapshot must pass before it may be published.

- ``schema:*`` (pandera) ran at each stage boundary already;
- ``expectations:*``: the Great Expectations suites over the artifacts;
- ``groundedness``: every automatically approved answer scored at least the threshold;
- ``regression``: the labelled suite answered by the same ladder the service runs, >= 99 %;
- ``miss-coverage``: the share of logged misses the new snapshot answers, against a target.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Final

from prefect import task
from prefect.cache_policies import NO_CACHE

from expectations.gate import run_expectations
from providers.embedders import Embedder
from schemas.build import Entry, RegressionCase
from schemas.errors import GateFailedError, InvalidInputError
from schemas.evaluation import EvalReport, Outcome, evaluate, summarize
from schemas.ladder import Composer, LoadedSnapshot, Route, answer_question, route_of
from schemas.manifest import FAILING_KEPT, FailingCase, GateResult, Snapshot
from schemas.router import RouterModel
from tasks._policies import stage_task
from tasks._warm import logged_misses

__all__ = [
    "FAILING_MARK",
    "REGRESSION_TARGET",
    "check_gates",
    "enforce_gate",
    "evaluate_cases",
    "load_cases",
    "miss_coverage",
    "run_gates",
    "verdict",
]

REGRESSION_TARGET: Final = 0.99
MISS_COVERAGE_TARGET: Final = 0.9


def load_cases(path: Path) -> list[RegressionCase]:
    """Labelled queries from a JSONL file in the eval format."""
    cases = []
    for number, line in enumerate(path.read_text("utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            cases.append(
                RegressionCase(
                    query=str(row["query"]),
                    accept=tuple(
                        {str(k): str(v) for k, v in t.items()} for t in row.get("accept", [])
                    ),
                    oos_type=row.get("oos_type"),
                )
            )
        except (json.JSONDecodeError, KeyError, AttributeError, TypeError) as exc:
            raise InvalidInputError(
                f"{path}:{number}: not a labelled query ({exc})",
                hint='each line is {"query", "accept": [{"entry_id"|"doc_id"|"section"}], '
                '"oos_type"}',
            ) from exc
    return cases


def canonical_cases(snapshot: Snapshot) -> list[RegressionCase]:
    """Every compiled entry's own question must reach that entry."""
    return [RegressionCase(query=e.question, accept=({"entry_id": e.id},)) for e in snapshot.exact]


def evaluate_cases(
    snapshot: Snapshot | LoadedSnapshot,
    cases: Sequence[RegressionCase],
    composer: Composer | None,
    embedder: Embedder | None,
) -> EvalReport:
    """Run ``cases`` through the answer ladder and summarize."""
    loaded = snapshot if isinstance(snapshot, LoadedSnapshot) else LoadedSnapshot(snapshot)
    route = route_of(loaded.router, embedder.embed if embedder is not None else None)
    return summarize(evaluate(loaded, cases, composer=composer, route=route))


FAILING_SHOWN: Final = 10
"""Failing regression cases a gate's detail lists (the rest are counted)."""


def failing_cases(outcomes: Sequence[Outcome]) -> tuple[FailingCase, ...]:
    """The failing cases of a regression run: question, expected, got, why."""
    return tuple(
        FailingCase(
            question=o.query,
            expected=", ".join("/".join(t.values()) for t in o.expected) or "the fallback",
            got=f"{o.layer} {o.entry_id}" if o.entry_id else o.layer,
            why=o.explanation,
        )
        for o in outcomes
        if not o.correct
    )


FAILING_MARK: Final = "; failing:"
"""Where a gate's detail starts listing its failing cases (a table shows them apart)."""


def listed(failing: Sequence[FailingCase]) -> str:
    """The first :data:`FAILING_SHOWN` failing cases, one per line, for a gate's detail."""
    lines = [
        f"\n  - {c.question!r}: expected {c.expected}, got {c.got} ({c.why})"
        for c in failing[:FAILING_SHOWN]
    ]
    if len(failing) > FAILING_SHOWN:
        lines.append(f"\n  ... and {len(failing) - FAILING_SHOWN} more")
    return FAILING_MARK + "".join(lines) if lines else ""


def risk_estimate(router: RouterModel | None) -> GateResult:
    """The wrong-answer rate the router was tuned to expect (reported; it does not block)."""
    if router is None:
        return GateResult(name="risk-estimate", passed=True, detail="no router in this snapshot")
    estimate = router.estimated_wrong_rate()
    metrics = router.header.metrics
    if estimate is None:
        return GateResult(
            name="risk-estimate",
            passed=True,
            detail="cannot estimate: the router was tuned without held-out verdicts",
        )
    share = metrics.get("policy_oos_share", 0.0)
    return GateResult(
        name="risk-estimate",
        passed=True,
        value=estimate,
        target=metrics.get("policy_wrong_target"),
        detail=f"expected wrong-answer rate {estimate:.1%} with {share:.0%} of questions out "
        f"of scope ({router.estimate_basis})",
    )


def miss_coverage(
    loaded: LoadedSnapshot,
    misses: Sequence[str],
    *,
    composer: Composer | None,
    route: Route | None,
) -> GateResult:
    """How many of the logged misses the snapshot now answers, through the whole ladder
    (reported against :data:`MISS_COVERAGE_TARGET`; it does not block a publish)."""
    if not misses:
        return GateResult(name="miss-coverage", passed=True, detail="no misses logged yet")
    answered = sum(
        answer_question(loaded, q, composer=composer, route=route).layer != "SAFE" for q in misses
    )
    return GateResult(
        name="miss-coverage",
        passed=True,
        value=round(answered / len(misses), 4),
        target=MISS_COVERAGE_TARGET,
        detail=f"{answered}/{len(misses)} logged misses now answered",
    )


def run_gates(
    snapshot: Snapshot,
    entries: Sequence[Entry],
    cases: Sequence[RegressionCase],
    *,
    composer: Composer | None,
    embedder: Embedder | None,
    threshold: float,
    misses: Sequence[str] = (),
) -> list[GateResult]:
    """Every gate's result (none raises here)."""
    results = run_expectations(snapshot)
    auto = [e for e in entries if e.status == "approved" and e.approved_via == "auto"]
    weakest = min((e.score for e in auto), default=1.0)
    results.append(
        GateResult(
            name="groundedness",
            passed=weakest >= threshold,
            value=round(weakest, 4),
            target=threshold,
            detail=f"{len(auto)} automatically approved answers, lowest score {weakest:.2f}",
        )
    )
    suite = [*canonical_cases(snapshot), *cases]
    loaded = LoadedSnapshot(snapshot)
    route = route_of(loaded.router, embedder.embed if embedder is not None else None)
    outcomes = evaluate(loaded, suite, composer=composer, route=route)
    report = summarize(outcomes)
    failing = failing_cases(outcomes)
    pending = sum(e.status == "pending" for e in entries)
    waiting = (
        f"; {pending} answers wait in the review queue (`ragc review list`)" if pending else ""
    )
    results.append(
        GateResult(
            name="regression",
            passed=report.pass_rate >= REGRESSION_TARGET,
            value=report.pass_rate,
            target=REGRESSION_TARGET,
            detail=(
                f"{round(report.pass_rate * report.queries)}/{report.queries} right "
                f"({len(cases)} labelled + {report.queries - len(cases)} canonical); "
                f"wrong-answer rate {report.wrong_rate:.1%}{waiting}" + listed(failing)
            ),
            failing=failing[:FAILING_KEPT],
        )
    )
    results.append(risk_estimate(loaded.router))
    results.append(miss_coverage(loaded, misses, composer=composer, route=route))
    return results


def verdict(result: GateResult) -> str:
    """Why a gate failed, its figure against its threshold first."""
    figure = (
        f"{result.value:.4g} against a threshold of {result.target:.4g}: "
        if result.value is not None and result.target is not None
        else ""
    )
    return figure + result.detail


def check_gates(results: Sequence[GateResult]) -> None:
    """Raise :class:`GateFailedError` for the first failed gate."""
    for result in results:
        if not result.passed:
            raise GateFailedError(result.name, verdict(result))


@task(name="gate", retries=0, cache_policy=NO_CACHE, task_run_name="gate-{result.name}")
def enforce_gate(result: GateResult) -> GateResult:
    """One gate as its own task run (``gate-regression``, ...): Failed, saying why, when the
    snapshot does not pass it."""
    check_gates([result])
    return result


@stage_task(retries=0)
def gate_snapshot(
    snapshot: Snapshot,
    entries: list[Entry],
    cases: list[RegressionCase],
    composer: Composer | None,
    embedder: Embedder | None,
    threshold: float,
    store_url: str | None = None,
) -> list[GateResult]:
    """Prefect task over :func:`run_gates`, with the misses logged by the service so far."""
    return run_gates(
        snapshot,
        entries,
        cases,
        composer=composer,
        embedder=embedder,
        threshold=threshold,
        misses=logged_misses(store_url) if store_url else (),
    )
