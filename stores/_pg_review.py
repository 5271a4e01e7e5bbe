"""The review queue in Postgres: :class:`stores.review.SqliteReviewQueue`'s twin.

One row per ``(entry_id, fingerprint)``; ``seq`` (a bigserial) orders submissions, so "the
newest item of an entry" is exact even when two submissions share a second. A decision is
read and written in one transaction, the row locked, so two reviewers cannot interleave.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, Final

import msgspec

from stores._pg import PgTables, utc_time
from stores._sql import Run
from stores.review import ReviewItem, ReviewQueue, ReviewStatus, check_status

__all__ = ["PostgresReviewQueue"]

_COLUMNS: Final = (
    "entry_id, fingerprint, question, answer, score, status, reviewer, decided_at, sources, reason"
)


def _iso(value: datetime | None) -> str:
    return value.astimezone(UTC).isoformat(timespec="seconds") if value is not None else ""


def _when(item: ReviewItem) -> datetime | None:
    if not item.decided_at:
        return None
    return utc_time(item.decided_at, f"review item {item.entry_id!r}")


def _item(row: Sequence[Any]) -> ReviewItem:
    return msgspec.convert(
        {
            "entry_id": row[0],
            "fingerprint": row[1],
            "question": row[2],
            "answer": row[3],
            "score": row[4],
            "status": row[5],
            "reviewer": row[6],
            "decided_at": _iso(row[7]),
            "sources": row[8],
            "reason": row[9],
        },
        ReviewItem,
    )


class PostgresReviewQueue(PgTables, ReviewQueue):
    """Review items in the Postgres warm tier (a DSN, or an injected pool)."""

    def submit(self, items: Sequence[ReviewItem]) -> None:
        """Queue items; an item already in the queue keeps its decision."""
        if not items:
            return
        for item in items:
            check_status(item.status)
        rows = [
            (
                i.entry_id,
                i.fingerprint,
                i.question,
                i.answer,
                i.score,
                i.status,
                i.reviewer,
                _when(i),
                list(i.sources),
                i.reason,
            )
            for i in items
        ]
        with self._connection() as conn, conn.cursor() as cur:
            cur.executemany(
                f"INSERT INTO ragc.review_items ({_COLUMNS}) "  # noqa: S608 - constant
                "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s) "
                "ON CONFLICT (entry_id, fingerprint) DO NOTHING",
                rows,
            )

    def items(self, status: ReviewStatus | None = None) -> list[ReviewItem]:
        """Queue items, newest first, optionally of one status."""
        rows = self._all(
            f"SELECT {_COLUMNS} FROM {{t}}review_items "  # noqa: S608 - constant
            "WHERE ?::text IS NULL OR status = ? ORDER BY seq DESC",
            (status, status),
        )
        return [_item(r) for r in rows]

    def _newest(self, run: Run, entry_id: str) -> ReviewItem | None:
        row = run(
            f"SELECT {_COLUMNS} FROM ragc.review_items "  # noqa: S608 - constant
            "WHERE entry_id = %s ORDER BY seq DESC LIMIT 1 FOR UPDATE",
            (entry_id,),
        ).fetchone()
        return None if row is None else _item(row)

    def _write_decision(self, run: Run, item: ReviewItem) -> None:
        run(
            "UPDATE ragc.review_items SET answer = %s, status = %s, reviewer = %s, "
            "decided_at = %s, updated_at = now() WHERE entry_id = %s AND fingerprint = %s",
            (item.answer, item.status, item.reviewer, _when(item), item.entry_id, item.fingerprint),
        )
