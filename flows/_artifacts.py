"""What a compile shows in the Prefect UI: markdown artifacts of its gates and its summary.

The tables are built by plain functions (tested without Prefect); :func:`publish_gates` and
:func:`publish_summary` hand them to Prefect as artifacts of the running flow run, keyed
``compile-gates`` and ``compile-summary`` so the UI shows each key's history across runs.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Final

from prefect.artifacts import create_markdown_artifact

from schemas.build import Usage
from schemas.manifest import GateResult
from tasks.gates import FAILING_MARK

if TYPE_CHECKING:
    from flows.compile import CompileResult

__all__ = [
    "GATES_KEY",
    "SUMMARY_KEY",
    "gates_markdown",
    "publish_gates",
    "publish_summary",
    "summary_markdown",
]

GATES_KEY: Final = "compile-gates"
SUMMARY_KEY: Final = "compile-summary"


def _cell(text: object) -> str:
    """A markdown table cell: one line, pipes escaped."""
    return " ".join(str(text).split()).replace("|", "\\|")


def _table(header: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _figure(value: float | None) -> str:
    return "—" if value is None else f"{value:.4g}"


def gates_markdown(version: str, gates: Sequence[GateResult]) -> str:
    """Every gate's figure against its threshold, then each failed gate's failing cases."""
    failed = [g for g in gates if not g.passed]
    verdict = (
        f"**{len(failed)} of {len(gates)} gates failed**: nothing was published."
        if failed
        else f"All {len(gates)} gates passed."
    )
    parts = [
        f"# Gates of {version}",
        verdict,
        _table(
            ("gate", "result", "figure", "threshold", "detail"),
            (
                (
                    g.name,
                    "pass" if g.passed else "**FAIL**",
                    _figure(g.value),
                    _figure(g.target),
                    g.detail.split(FAILING_MARK)[0],
                )
                for g in gates
            ),
        ),
    ]
    for gate in gates:
        if gate.failing and not gate.passed:
            parts.append(f"## Failing cases of {gate.name} ({len(gate.failing)} kept)")
            parts.append(
                _table(
                    ("question", "expected", "got", "why"),
                    ((c.question, c.expected, c.got, c.why) for c in gate.failing),
                )
            )
    return "\n\n".join(parts) + "\n"


def _usage_rows(usage: Sequence[Usage]) -> list[tuple[object, ...]]:
    return [
        (
            u.stage,
            u.calls,
            u.input_tokens,
            u.output_tokens,
            u.cache_read_input_tokens,
            u.cache_creation_input_tokens,
        )
        for u in usage
    ]


def _counts(title: str, counts: Mapping[str, int]) -> str:
    return f"## {title}\n\n" + _table(("", "count"), sorted(counts.items()))


def summary_markdown(result: CompileResult) -> str:
    """The compile's counts, stage timings, provider calls and tokens."""
    published = "published and active" if result.published else "sealed, not published"
    parts = [
        f"# Compile of {result.version}",
        f"{published}, in {result.seconds:.1f} s; snapshot folder `{result.snapshot_dir}`.",
        _counts("Artifacts", result.counts),
        _counts("Entries by review status", result.entries),
        "## Stages\n\n"
        + _table(("stage", "seconds"), ((s.stage, s.seconds) for s in result.stages)),
        "## Provider calls\n\n"
        + _table(
            ("stage", "generated", "from the build cache"),
            (
                (stage, result.provider_calls.get(stage, 0), result.provider_reused.get(stage, 0))
                for stage in sorted(set(result.provider_calls) | set(result.provider_reused))
            ),
        ),
    ]
    if result.usage:
        parts.append(
            "## Tokens\n\n"
            + _table(
                ("stage", "calls", "input", "output", "cache reads", "cache writes"),
                _usage_rows(result.usage),
            )
        )
    if result.duplicates:
        parts.append(
            "## Duplicate questions\n\n"
            + _table(
                ("group", "verdict", "canonical", "members"),
                ((g.id, g.verdict, g.canonical, len(g.members)) for g in result.duplicates),
            )
        )
    if result.skipped:
        parts.append(
            "## Skipped files\n\n"
            + _table(("path", "reason"), ((s.path, s.reason) for s in result.skipped))
        )
    return "\n\n".join(parts) + "\n"


def publish_gates(version: str, gates: Sequence[GateResult]) -> None:
    """The gates table as the running flow run's ``compile-gates`` artifact."""
    failed = sum(not g.passed for g in gates)
    create_markdown_artifact(
        gates_markdown(version, gates),
        key=GATES_KEY,
        description=f"{version}: {failed} gate(s) failed" if failed else f"{version}: gates passed",
    )


def publish_summary(result: CompileResult) -> None:
    """The compile summary as the running flow run's ``compile-summary`` artifact."""
    create_markdown_artifact(
        summary_markdown(result), key=SUMMARY_KEY, description=f"compile of {result.version}"
    )
