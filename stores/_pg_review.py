"""The review queue in Postgres: :class:`stores.review.SqliteReviewQueue`'s twin.

One row per ``(entry_id, fingerprint)``; ``seq`` (a bigserial) orders submissions, so "the
newest item of an entry" is exact even when two submissions share a second. A decision is
read and written in one transaction, the row locked, so two reviewers cannot interleave.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, Final, get_args

import msgspec

from schemas.errors import InvalidInputError
from stores._pg import PgComponent
from stores.review import ReviewItem, ReviewStatus

__all__ = ["PostgresReviewQueue"]

_STATUSES: Final[tuple[str, ...]] = get_args(ReviewStatus)
_COLUMNS: Final = (
    "entry_id, fingerprint, question, answer, score, status, reviewer, decided_at, sources, reason"
)


def _iso(value: datetime | None) -> str:
    return value.astimezone(UTC).isoformat(timespec="seconds") if value is not None else ""


def _when(item: ReviewItem) -> datetime | None:
    if not item.decided_at:
        return None
    try:
        parsed = datetime.fromisoformat(item.decided_at)
    except ValueError as exc:
        raise InvalidInputError(
            f"review item {item.entry_id!r} has an unreadable decided_at {item.decided_at!r}",
            hint="use an ISO 8601 time such as 2026-01-01T00:00:00+00:00",
        ) from exc
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


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


def _check_status(status: str) -> None:
    if status not in _STATUSES:
        raise InvalidInputError(
            f"unknown review status {status!r}", hint=f"use one of {', '.join(_STATUSES)}"
        )


class PostgresReviewQueue(PgComponent):
    """Review items in the Postgres warm tier (a DSN, or an injected pool)."""

    def submit(self, items: Sequence[ReviewItem]) -> None:
        """Queue items; an item already in the queue keeps its decision."""
        if not items:
            return
        for item in items:
            _check_status(item.status)
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
        with self._connection() as conn:
            if status is None:
                rows = conn.execute(
                    f"SELECT {_COLUMNS} FROM ragc.review_items ORDER BY seq DESC"  # noqa: S608
                ).fetchall()
            else:
                rows = conn.execute(
                    f"SELECT {_COLUMNS} FROM ragc.review_items "  # noqa: S608 - constant
                    "WHERE status = %s ORDER BY seq DESC",
                    (status,),
                ).fetchall()
        return [_item(r) for r in rows]

    def decisions(self) -> dict[tuple[str, str], ReviewItem]:
        """Every decided item by ``(entry_id, fingerprint)``."""
        with self._connection() as conn:
            rows = conn.execute(
                f"SELECT {_COLUMNS} FROM ragc.review_items "  # noqa: S608 - constant
                "WHERE status <> 'pending' ORDER BY seq DESC"
            ).fetchall()
        return {(i.entry_id, i.fingerprint): i for i in map(_item, rows)}

    def decide(
        self,
        entry_id: str,
        status: ReviewStatus,
        *,
        reviewer: str,
        answer: str | None = None,
    ) -> ReviewItem:
        """Record a decision on the newest item of ``entry_id`` (an edit replaces the answer)."""
        _check_status(status)
        with self._connection() as conn:
            row = conn.execute(
                f"SELECT {_COLUMNS} FROM ragc.review_items "  # noqa: S608 - constant
                "WHERE entry_id = %s ORDER BY seq DESC LIMIT 1 FOR UPDATE",
                (entry_id,),
            ).fetchone()
            if row is None:
                raise InvalidInputError(
                    f"no answer with id {entry_id!r} is in the review queue",
                    hint="`ragc review list` shows the queue",
                )
            item = _item(row)
            decided = msgspec.structs.replace(
                item,
                status=status,
                reviewer=reviewer,
                decided_at=datetime.now(UTC).isoformat(timespec="seconds"),
                answer=answer if answer is not None else item.answer,
            )
            conn.execute(
                "UPDATE ragc.review_items SET answer = %s, status = %s, reviewer = %s, "
                "decided_at = %s, updated_at = now() WHERE entry_id = %s AND fingerprint = %s",
                (
                    decided.answer,
                    status,
                    reviewer,
                    _when(decided),
                    entry_id,
                    item.fingerprint,
                ),
            )
        return decided
