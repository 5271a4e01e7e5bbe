"""Pointer flows: roll a version out, roll back, collect old versions (for schedules and ops)."""

from __future__ import annotations

from prefect import flow

from flows._defaults import store_url
from schemas.rollout import RolloutRecord
from tasks.publish import GcReport, gc_store, move_pointer

__all__ = ["collect_versions", "roll_back", "roll_out"]


@flow(name="collect-versions")
def collect_versions(store: str | None = None, keep: int = 3) -> GcReport:
    """GC: keep the newest ``keep`` versions plus every version in use."""
    return gc_store(store_url(store), keep)


@flow(name="roll-out-version")
def roll_out(version: str, percent: float = 100.0, store: str | None = None) -> RolloutRecord:
    """Serve ``version`` to ``percent`` % of sessions (100 makes it active)."""
    return move_pointer(store_url(store), version, percent)


@flow(name="roll-back-version")
def roll_back(store: str | None = None) -> RolloutRecord:
    """End a canary, or return to the previously active version."""
    return move_pointer(store_url(store), None, 0.0)
