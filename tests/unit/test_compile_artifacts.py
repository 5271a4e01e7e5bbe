"""The compile's Prefect artifacts: the gates table and the summary, as markdown."""

from __future__ import annotations

import pytest

from flows._artifacts import gates_markdown, summary_markdown
from flows.compile import CompileResult, StageTime
from schemas.build import Usage
from schemas.errors import GateFailedError
from schemas.manifest import FailingCase, GateResult
from tasks.gates import check_gates, verdict

FAILED = GateResult(
    name="regression",
    passed=False,
    value=0.86,
    target=0.99,
    detail="38/44 right; failing:\n  - 'a': expected x, got SAFE (no match)",
    failing=(
        FailingCase(question="a | b", expected="x", got="SAFE", why="confidence 0.2 below 0.5"),
    ),
)
PASSED = GateResult(name="groundedness", passed=True, value=0.91, target=0.5, detail="12 answers")


def test_the_gates_table_shows_each_figure_and_only_failed_gates_cases() -> None:
    table = gates_markdown("v7", [PASSED, FAILED])
    assert "**1 of 2 gates failed**: nothing was published." in table
    assert "| groundedness | pass | 0.91 | 0.5 | 12 answers |" in table
    # the detail's case list is not repeated in the row: the cases get a table of their own
    assert "| regression | **FAIL** | 0.86 | 0.99 | 38/44 right |" in table
    assert "## Failing cases of regression (1 kept)" in table
    assert "| a \\| b | x | SAFE | confidence 0.2 below 0.5 |" in table  # pipes escaped
    passing = GateResult(name="regression", passed=True, failing=FAILED.failing)
    assert "Failing cases" not in gates_markdown("v7", [passing])


def test_a_failed_gate_says_its_figure_against_its_threshold() -> None:
    assert verdict(FAILED).startswith("0.86 against a threshold of 0.99: 38/44 right")
    assert verdict(GateResult(name="schema:x", passed=False, detail="row 2")) == "row 2"
    with pytest.raises(GateFailedError, match=r"gate 'regression' failed: 0\.86 against"):
        check_gates([PASSED, FAILED])


def test_the_summary_lists_counts_stages_calls_and_tokens() -> None:
    result = CompileResult(
        version="v3",
        published=True,
        snapshot_dir="build/snapshots/v3",
        counts={"exact": 40, "topics": 4},
        gates=(PASSED,),
        stages=(StageTime("ingest", 0.5), StageTime("answer", 2.25)),
        skipped=(),
        provider_calls={"answer": 3},
        provider_reused={"answer": 37, "synthesize": 12},
        usage=(Usage(stage="answer", calls=3, input_tokens=900, output_tokens=120),),
        entries={"approved": 40},
        seconds=12.5,
    )
    text = summary_markdown(result)
    assert "published and active, in 12.5 s" in text
    assert "| exact | 40 |" in text
    assert "| answer | 2.25 |" in text
    assert "| answer | 3 | 37 |" in text
    assert "| synthesize | 0 | 12 |" in text
    assert "| answer | 3 | 900 | 120 | 0 | 0 |" in text
