"""The review queue: generated answers waiting for a person, and the decisions they made.

A decision is bound to the entry's fingerprint (its answer plus the text it came from), so it
holds across recompiles for as long as neither changes. Kept in the same SQLite file as the
snapshots for the embedded setup.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Literal, Protocol

import msgspec

from schemas.errors import InvalidInputError
from stores.sqlite import connect

__all__ = ["ReviewItem", "ReviewQueue", "ReviewStatus", "SqliteReviewQueue"]

ReviewStatus = Literal["pending", "approved", "rejected"]


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


class ReviewQueue(Protocol):
    """What a review queue does, in the store's SQLite file or in Postgres."""

    def submit(self, items: Sequence[ReviewItem]) -> None:
        """Queue items; an item already in the queue keeps its decision."""
        ...

    def items(self, status: ReviewStatus | None = None) -> list[ReviewItem]:
        """Queue items, newest first, optionally of one status."""
        ...

    def decisions(self) -> dict[tuple[str, str], ReviewItem]:
        """Every decided item by ``(entry_id, fingerprint)``."""
        ...

    def decide(
        self,
        entry_id: str,
        status: ReviewStatus,
        *,
        reviewer: str,
        answer: str | None = None,
    ) -> ReviewItem:
        """Record a decision on the newest item of ``entry_id`` (an edit replaces the answer)."""
        ...

    def close(self) -> None: ...


class SqliteReviewQueue:
    """Review items in a SQLite file (the store's file by default)."""

    def __init__(self, url: str) -> None:
        self._db = connect(url)
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS reviews (entry_id TEXT NOT NULL, fingerprint TEXT NOT NULL,"
            " item BLOB NOT NULL, status TEXT NOT NULL, updated_at TEXT NOT NULL,"
            " PRIMARY KEY (entry_id, fingerprint))"
        )
        self._lock = threading.Lock()

    def submit(self, items: Sequence[ReviewItem]) -> None:
        """Queue items; an item already in the queue keeps its decision."""
        now = datetime.now(UTC).isoformat(timespec="seconds")
        with self._lock:
            self._db.execute("BEGIN")
            self._db.executemany(
                "INSERT OR IGNORE INTO reviews (entry_id, fingerprint, item, status, updated_at)"
                " VALUES (?, ?, ?, ?, ?)",
                [(i.entry_id, i.fingerprint, msgspec.json.encode(i), i.status, now) for i in items],
            )
            self._db.execute("COMMIT")

    def items(self, status: ReviewStatus | None = None) -> list[ReviewItem]:
        """Queue items, newest first, optionally of one status."""
        sql = "SELECT item FROM reviews"
        args: tuple[str, ...] = ()
        if status is not None:
            sql += " WHERE status = ?"
            args = (status,)
        with self._lock:
            rows = self._db.execute(sql + " ORDER BY rowid DESC", args).fetchall()
        return [msgspec.json.decode(r[0], type=ReviewItem) for r in rows]

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
        """Record a decision on the newest item of ``entry_id`` (an edit replaces the answer)."""
        with self._lock:
            row = self._db.execute(
                # The newest submitted fingerprint: rowids only grow (timestamps tie in a second).
                "SELECT item FROM reviews WHERE entry_id = ? ORDER BY rowid DESC LIMIT 1",
                (entry_id,),
            ).fetchone()
        if row is None:
            raise InvalidInputError(
                f"no answer with id {entry_id!r} is in the review queue",
                hint="`ragc review list` shows the queue",
            )
        item = msgspec.json.decode(row[0], type=ReviewItem)
        decided = msgspec.structs.replace(
            item,
            status=status,
            reviewer=reviewer,
            decided_at=datetime.now(UTC).isoformat(timespec="seconds"),
            answer=answer if answer is not None else item.answer,
        )
        with self._lock:
            self._db.execute(
                "UPDATE reviews SET item = ?, status = ?, updated_at = ? "
                "WHERE entry_id = ? AND fingerprint = ?",
                (
                    msgspec.json.encode(decided),
                    status,
                    decided.decided_at,
                    entry_id,
                    item.fingerprint,
                ),
            )
        return decided

    def close(self) -> None:
        with self._lock:
            self._db.close()
