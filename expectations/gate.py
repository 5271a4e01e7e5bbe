"""The publish gate that runs the Great Expectations suites over a snapshot's artifacts."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING

import msgspec
import pandas as pd

from schemas.manifest import GateResult, Snapshot

if TYPE_CHECKING:
    from great_expectations.data_context import AbstractDataContext

__all__ = ["artifact_frames", "run_expectations"]


def _frame(records: Sequence[msgspec.Struct]) -> pd.DataFrame:
    rows = []
    for record in records:
        row = msgspec.structs.asdict(record)
        row["source_count"] = len(row.pop("sources", ()))
        row["example_count"] = len(row.get("examples", ()))
        row["tenant_key"] = row.get("tenant") or ""
        rows.append({k: v for k, v in row.items() if not isinstance(v, (tuple, list, dict))})
    return pd.DataFrame(rows)


def _target(kwargs: dict[str, object]) -> str:
    return str(kwargs.get("column") or kwargs.get("column_list") or "")


def artifact_frames(snapshot: Snapshot) -> dict[str, pd.DataFrame]:
    """Each artifact family as a flat frame (counts in place of nested lists)."""
    return {
        "exact": _frame(snapshot.exact),
        "intents": _frame(snapshot.intents),
        "topics": _frame(snapshot.topics),
    }


def _context() -> AbstractDataContext:
    """An ephemeral Great Expectations context without progress bars (Great Expectations is
    imported here, by the gates stage only: it takes seconds)."""
    import great_expectations as gx  # noqa: PLC0415 - heavy, for this stage only
    from great_expectations.data_context.types.base import ProgressBarsConfig  # noqa: PLC0415

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False, metric_calculations=False)
    return context


def run_expectations(snapshot: Snapshot) -> list[GateResult]:
    """One gate result per suite; a family with no records passes with a note."""
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    for name in ("great_expectations", "great_expectations.data_context.types.base"):
        logging.getLogger(name).setLevel(logging.ERROR)
    context = _context()
    from expectations.suites import SUITES  # noqa: PLC0415 - imports Great Expectations

    source = context.data_sources.add_pandas("ragc_snapshot")
    results: list[GateResult] = []
    for family, frame in artifact_frames(snapshot).items():
        suite = SUITES[family]()
        if frame.empty:
            results.append(
                GateResult(name=f"expectations:{suite.name}", passed=True, detail="no records")
            )
            continue
        asset = source.add_dataframe_asset(name=family)
        batch = asset.add_batch_definition_whole_dataframe("all").get_batch(
            batch_parameters={"dataframe": frame}
        )
        outcome = batch.validate(suite, result_format="SUMMARY")
        failed = [r for r in outcome.results if not r.success]
        detail = "; ".join(
            f"{r.expectation_config.type}({_target(r.expectation_config.kwargs)}): "
            f"{r.result.get('unexpected_count', '?')} unexpected"
            for r in failed
            if r.expectation_config is not None
        )
        results.append(
            GateResult(
                name=f"expectations:{suite.name}",
                passed=bool(outcome.success),
                detail=detail or f"{len(outcome.results)} expectations met",
            )
        )
    return results
