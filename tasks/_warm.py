"""The compile's view of the warm tier (see :class:`stores.warm.WarmTier`): review queue, miss
log and version catalogue, in Postgres when ``RAGC_WARM_DSN`` is set (injected as job env by
``prefect.yaml``), else in the store's SQLite file. The DSN is read from the environment only.
"""

from __future__ import annotations

from schemas.manifest import Snapshot
from schemas.settings import Environment
from stores.audit import MissSummary
from stores.review import ReviewQueue
from stores.warm import WarmTier

__all__ = [
    "frequent_misses",
    "logged_misses",
    "open_review_queue",
    "record_catalogue",
    "warm_tier",
]


def warm_tier(store_url: str) -> WarmTier:
    """The warm tier of the compile's store, with the DSN from the environment."""
    return WarmTier(store_url, Environment.read().warm_dsn)


def open_review_queue(store_url: str) -> ReviewQueue | None:
    """The review queue, or ``None`` when the store has nowhere to keep one (Redis alone)."""
    return warm_tier(store_url).review_queue()


def frequent_misses(store_url: str, limit: int = 1000) -> list[MissSummary]:
    """The questions the service answered with the fallback, grouped, most frequent first."""
    log = warm_tier(store_url).audit_log()
    if log is None:
        return []
    try:
        return log.misses(limit=limit)
    finally:
        log.close()


def logged_misses(store_url: str, limit: int = 1000) -> list[str]:
    """The distinct questions the service answered with the fallback."""
    return [m.example for m in frequent_misses(store_url, limit)]


def record_catalogue(snapshot: Snapshot, store_url: str) -> bool:
    """Record a published version's manifest (and slot values) in the warm tier, if any."""
    return warm_tier(store_url).record_catalogue(snapshot)
