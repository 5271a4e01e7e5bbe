"""The review queue: generated answers waiting for a person, and the decisions they made.

A decision is bound to the entry's fingerprint (its answer plus the text it came from), so it
holds across recompiles for as long as neither changes. Kept in the same SQLite file as the
snapshots for the embedded setup.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Final, Literal, get_args

import msgspec

from schemas.errors import InvalidInputError
from stores._sql import Run, SqliteTables, SqlTables
from stores.sqlite import connect

__all__ = [
    "STATUSES",
    "ReviewItem",
    "ReviewQueue",
    "ReviewStatus",
    "SqliteReviewQueue",
    "check_status",
    "decided",
    "not_queued",
]

ReviewStatus = Literal["pending", "approved", "rejected"]
STATUSES: Final[tuple[str, ...]] = get_args(ReviewStatus)


class ReviewItem(msgspec.Struct, frozen=True, kw_only=True):
    """One answer in the queue and its current decision."""

    entry_id: str
    fingerprint: str
    question: str
    answer: str
    score: float
    status: ReviewStatus = "pending"
    reviewer: str = ""
    decided_at: str = ""
    sources: tuple[str, ...] = ()
    reason: str = ""
    """Why it is held beyond the policy (a conflicting duplicate names both sections)."""


def check_status(status: str) -> None:
    """Refuse a status the queue does not know."""
    if status not in STATUSES:
        raise InvalidInputError(
            f"unknown review status {status!r}", hint=f"use one of {', '.join(STATUSES)}"
        )


def not_queued(entry_id: str) -> InvalidInputError:
    """The error for a decision on an entry the queue does not hold."""
    return InvalidInputError(
        f"no answer with id {entry_id!r} is in the review queue",
        hint="`ragc review list` shows the queue",
    )


def decided(
    item: ReviewItem, status: ReviewStatus, reviewer: str, answer: str | None
) -> ReviewItem:
    """``item`` with a decision made now (an edit replaces the answer)."""
    return msgspec.structs.replace(
        item,
        status=status,
        reviewer=reviewer,
        decided_at=datetime.now(UTC).isoformat(timespec="seconds"),
        answer=answer if answer is not None else item.answer,
    )


class ReviewQueue(SqlTables):
    """What a review queue does, in the store's SQLite file or in Postgres."""

    @abstractmethod
    def submit(self, items: Sequence[ReviewItem]) -> None:
        """Queue items; an item already in the queue keeps its decision."""

    @abstractmethod
    def items(self, status: ReviewStatus | None = None) -> list[ReviewItem]:
        """Queue items, newest first, optionally of one status."""

    def decisions(self) -> dict[tuple[str, str], ReviewItem]:
        """Every decided item by ``(entry_id, fingerprint)``."""
        return {(i.entry_id, i.fingerprint): i for i in self.items() if i.status != "pending"}

    def decide(
        self,
        entry_id: str,
        status: ReviewStatus,
        *,
        reviewer: str,
        answer: str | None = None,
    ) -> ReviewItem:
        """Record a decision on the newest item of ``entry_id`` (an edit replaces the answer),
        read and written in one transaction so two reviewers cannot interleave."""
        check_status(status)
        with self._transaction() as run:
            item = self._newest(run, entry_id)
            if item is None:
                raise not_queued(entry_id)
            made = decided(item, status, reviewer, answer)
            self._write_decision(run, made)
        return made

    @abstractmethod
    def _newest(self, run: Run, entry_id: str) -> ReviewItem | None:
        """The newest submitted item of ``entry_id`` (locked until the transaction ends)."""

    @abstractmethod
    def _write_decision(self, run: Run, item: ReviewItem) -> None:
        """Store ``item``'s decision over its queued row."""


class SqliteReviewQueue(SqliteTables, ReviewQueue):
    """Review items in a SQLite file (the store's file by default)."""

    def __init__(self, url: str) -> None:
        super().__init__(
            connect(
                url,
                "CREATE TABLE IF NOT EXISTS reviews (entry_id TEXT NOT NULL,"
                " fingerprint TEXT NOT NULL, item BLOB NOT NULL, status TEXT NOT NULL,"
                " updated_at TEXT NOT NULL, PRIMARY KEY (entry_id, fingerprint))",
            )
        )

    def submit(self, items: Sequence[ReviewItem]) -> None:
        """Queue items; an item already in the queue keeps its decision."""
        for item in items:
            check_status(item.status)
        now = datetime.now(UTC).isoformat(timespec="seconds")
        with self._transaction():
            self._db.executemany(
                "INSERT OR IGNORE INTO reviews (entry_id, fingerprint, item, status, updated_at)"
                " VALUES (?, ?, ?, ?, ?)",
                [(i.entry_id, i.fingerprint, msgspec.json.encode(i), i.status, now) for i in items],
            )

    def items(self, status: ReviewStatus | None = None) -> list[ReviewItem]:
        """Queue items, newest first, optionally of one status."""
        rows = self._all(
            "SELECT item FROM reviews WHERE ? IS NULL OR status = ? ORDER BY rowid DESC",
            (status, status),
        )
        return [msgspec.json.decode(r[0], type=ReviewItem) for r in rows]

    def _newest(self, run: Run, entry_id: str) -> ReviewItem | None:
        row = run(
            # The newest submitted fingerprint: rowids only grow (timestamps tie in a second).
            "SELECT item FROM reviews WHERE entry_id = ? ORDER BY rowid DESC LIMIT 1",
            (entry_id,),
        ).fetchone()
        return None if row is None else msgspec.json.decode(row[0], type=ReviewItem)

    def _write_decision(self, run: Run, item: ReviewItem) -> None:
        run(
            "UPDATE reviews SET item = ?, status = ?, updated_at = ? "
            "WHERE entry_id = ? AND fingerprint = ?",
            (
                msgspec.json.encode(item),
                item.status,
                item.decided_at,
                item.entry_id,
                item.fingerprint,
            ),
        )
