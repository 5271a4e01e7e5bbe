"""``ragc eval`` on the example knowledge: figures, JSON, and the HTML report."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ragc.cli import app
from ragc.evaluate import _default_store
from schemas.evaluation import Outcome, threshold_curve
from tasks.router import RouterPolicy
from tests.conftest import EXAMPLES
from tests.e2e.conftest import Compiled

pytestmark = [pytest.mark.e2e]


@pytest.fixture
def store_url(compiled: Compiled, tmp_path: Path) -> str:
    copy = tmp_path / "knowledge.db"
    source, target = sqlite3.connect(compiled.root / "knowledge.db"), sqlite3.connect(copy)
    source.backup(target)
    source.close()
    target.close()
    return f"sqlite:///{copy}"


def test_eval_reports_the_figures_of_the_readme_definitions(store_url: str, tmp_path: Path) -> None:
    report = tmp_path / "report.html"
    result = CliRunner().invoke(
        app,
        [
            "eval",
            str(EXAMPLES / "queries.jsonl"),
            "--knowledge",
            str(EXAMPLES),
            "--store",
            store_url,
            "--json",
            "--report",
            str(report),
        ],
    )

    assert result.exit_code == 0, result.output
    figures = json.loads(result.stdout)
    assert figures["queries"] == 43
    assert figures["in_scope"] + figures["out_of_scope"] == 43
    assert 0.3 <= figures["coverage"] <= 1.0
    assert set(figures["rejection_by_type"]) == {"in_domain", "out_of_domain"}
    assert abs(sum(figures["layer_share"].values()) - 1.0) < 0.01
    page = report.read_text()
    assert "<svg" in page
    assert "Worst confusions" in page
    assert "Misses" in page


def test_eval_refuses_a_missing_query_file(store_url: str) -> None:
    result = CliRunner().invoke(
        app, ["eval", "nope.jsonl", "--knowledge", str(EXAMPLES), "--store", store_url]
    )
    assert result.exit_code == 1
    assert "does not exist" in result.stderr


def test_each_router_policy_gets_its_own_default_store() -> None:
    default = _default_store(EXAMPLES, RouterPolicy())
    assert default == _default_store(EXAMPLES, RouterPolicy(wrong_target=0.02, oos_share=0.05))
    stricter = _default_store(EXAMPLES, RouterPolicy(wrong_target=0.01))
    assert stricter != default
    assert stricter != _default_store(EXAMPLES, RouterPolicy(oos_share=0.5))
    assert stricter.startswith("sqlite:///.ragc/eval/examples-")
    gated = _default_store(EXAMPLES, RouterPolicy(similarity_gate=True))
    assert gated not in (default, stricter)


def _outcome(**fields: object) -> Outcome:
    base: dict[str, object] = {
        "query": "q",
        "layer": "SAFE",
        "served": False,
        "correct": False,
        "in_scope": True,
        "oos_type": None,
        "entry_id": None,
        "expected": ({"entry_id": "a"},),
        "confidence": 0.0,
        "latency_ms": 1.0,
    }
    return Outcome(**(base | fields))  # type: ignore[arg-type]


def test_the_threshold_curve_trades_coverage_for_wrong_answers() -> None:
    outcomes = [
        _outcome(layer="L1", served=True, correct=True),
        _outcome(candidate="a", candidate_confidence=0.9, candidate_correct=True),
        _outcome(candidate="b", candidate_confidence=0.4, candidate_correct=False),
        _outcome(in_scope=False, expected=(), candidate="c", candidate_confidence=0.6),
    ]
    low, high = threshold_curve(outcomes, [0.3, 0.95])
    assert (low.coverage, low.wrong_rate, low.rejection) == (round(2 / 3, 4), 0.5, 0.0)
    assert (high.coverage, high.wrong_rate, high.rejection) == (round(1 / 3, 4), 0.0, 1.0)
