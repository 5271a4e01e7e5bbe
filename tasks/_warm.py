"""The compile's view of the warm tier: review queue, miss log and version catalogue.

With ``RAGC_WARM_DSN`` set (injected as job env by ``prefect.yaml``), they live in Postgres;
otherwise the review queue and miss log live in the store's SQLite file, and there is no
catalogue beyond the store itself. The DSN is read from the environment only.
"""

from __future__ import annotations

import os
from typing import Protocol

from schemas.manifest import Snapshot
from stores.audit import AuditLog, MissSummary, SqliteAuditLog
from stores.review import ReviewItem, ReviewQueue

__all__ = [
    "Queue",
    "frequent_misses",
    "logged_misses",
    "open_review_queue",
    "record_catalogue",
    "warm_dsn",
]


class Queue(Protocol):
    """The review queue, embedded or warm."""

    def submit(self, items: list[ReviewItem]) -> None: ...

    def decisions(self) -> dict[tuple[str, str], ReviewItem]: ...

    def close(self) -> None: ...


def warm_dsn() -> str | None:
    """The Postgres warm tier's DSN, from the environment only."""
    return os.environ.get("RAGC_WARM_DSN") or None


def open_review_queue(store_url: str) -> Queue | None:
    """The review queue: the warm tier's, else the store's SQLite file's, else none."""
    dsn = warm_dsn()
    if dsn:
        from stores.postgres import PostgresReviewQueue  # noqa: PLC0415 - only when configured

        return PostgresReviewQueue(dsn)
    return ReviewQueue(store_url) if store_url.startswith("sqlite:///") else None


def frequent_misses(store_url: str, limit: int = 1000) -> list[MissSummary]:
    """The questions the service answered with the fallback, grouped, most frequent first:
    the warm tier's miss log, else the store's SQLite file's, else none."""
    log: AuditLog
    dsn = warm_dsn()
    if dsn:
        from stores.postgres import PostgresAuditLog  # noqa: PLC0415 - only when configured

        log = PostgresAuditLog(dsn)
    elif store_url.startswith("sqlite:///"):
        log = SqliteAuditLog(store_url)
    else:
        return []
    try:
        return log.misses(limit=limit)
    finally:
        log.close()


def logged_misses(store_url: str, limit: int = 1000) -> list[str]:
    """The distinct questions the service answered with the fallback."""
    return [m.example for m in frequent_misses(store_url, limit)]


def record_catalogue(snapshot: Snapshot) -> bool:
    """Record a published version's manifest (and slot values) in the warm tier, if any."""
    dsn = warm_dsn()
    if not dsn:
        return False
    from stores.postgres import PostgresVersionCatalog  # noqa: PLC0415

    catalogue = PostgresVersionCatalog(dsn)
    try:
        return catalogue.record(snapshot.manifest, intents=snapshot.intents)
    finally:
        catalogue.close()
