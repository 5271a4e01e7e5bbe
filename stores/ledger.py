"""The change ledger: every accepted knowledge-changed webhook delivery, in the store's SQLite file.

A delivery is recorded before anything is dispatched, so a crash between accepting it and
emitting its event (or starting its recompile) loses nothing: :meth:`SqliteChangeLedger.pending`
lists what was recorded but never dispatched, and the service dispatches it again at start-up.
The delivery id is the table's primary key, so a replayed delivery fails in the ``INSERT``
itself — atomically, with no check-then-insert race between concurrent requests.

Status: ``recorded`` → ``dispatched`` (event emitted or recompile started) → ``done`` | ``failed``.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Final, Literal, get_args

import msgspec

from schemas.errors import InvalidInputError, PermanentError
from stores._sql import Dialect, SqliteTables, SqlTables
from stores.sqlite import connect

__all__ = [
    "ChangeLedger",
    "Delivery",
    "DeliveryStatus",
    "DuplicateDeliveryError",
    "SqliteChangeLedger",
]

DeliveryStatus = Literal["recorded", "dispatched", "done", "failed"]
STATUSES: Final[tuple[str, ...]] = get_args(DeliveryStatus)


class Delivery(msgspec.Struct, frozen=True, kw_only=True):
    """One accepted webhook delivery and how far its recompile got."""

    delivery: str
    """Delivery id: a hash of the signed payload (timestamp and body)."""
    received_at: float
    """Unix time the service accepted it."""
    signed_at: int
    """Unix time from the signature header (``t=``)."""
    knowledge: str
    """Name of the knowledge source (the event resource is ``ragc.knowledge.<name>``)."""
    changed: tuple[str, ...]
    """Paths relative to the knowledge folder."""
    status: DeliveryStatus = "recorded"
    detail: str | None = None
    """What happened last: the event id, the recompile's exit code, why it failed."""
    updated_at: float = 0.0


class DuplicateDeliveryError(PermanentError):
    """A delivery with this id was already accepted: a replay, refused."""

    def __init__(self, delivery: str, received_at: float | None) -> None:
        self.delivery = delivery
        when = (
            f" at {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime(received_at))}"
            if received_at is not None
            else ""
        )
        super().__init__(
            f"delivery {delivery} was already received{when}; replayed deliveries are refused",
            hint="to report the change again, sign a new delivery with a fresh timestamp",
        )


_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS webhook_deliveries (
    delivery    TEXT PRIMARY KEY,
    received_at REAL NOT NULL,
    signed_at   INTEGER NOT NULL,
    knowledge   TEXT NOT NULL,
    changed     TEXT NOT NULL,
    status      TEXT NOT NULL CHECK (status IN ('recorded', 'dispatched', 'done', 'failed')),
    detail      TEXT,
    updated_at  REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS webhook_deliveries_by_status ON webhook_deliveries (status);
"""
_COLUMNS: Final = "delivery, received_at, signed_at, knowledge, changed, status, detail, updated_at"


def _row(row: Sequence[object]) -> Delivery:
    fields = dict(zip(_COLUMNS.split(", "), row, strict=True))
    return msgspec.convert({**fields, "changed": Dialect.strings(fields["changed"])}, Delivery)


class ChangeLedger(SqlTables):
    """Where webhook deliveries are recorded, the store's SQLite file or the warm tier: the
    statements, one copy for both."""

    def seen(self, delivery: str) -> bool:
        """A delivery with this id was already recorded."""
        found = self._one("SELECT 1 FROM {t}webhook_deliveries WHERE delivery = ?", (delivery,))
        return found is not None

    def record(
        self,
        delivery: str,
        *,
        signed_at: int,
        knowledge: str,
        changed: Sequence[str],
        received_at: float | None = None,
    ) -> Delivery:
        """Record an accepted delivery as ``recorded``; a known id raises DuplicateDeliveryError.

        Of any number of concurrent replays (across processes and, on Postgres, hosts) exactly
        one inserts its row: the primary key decides, inside the ``INSERT`` itself.
        """
        now = time.time() if received_at is None else received_at
        entry = Delivery(
            delivery=delivery,
            received_at=now,
            signed_at=signed_at,
            knowledge=knowledge,
            changed=tuple(changed),
            updated_at=now,
        )
        row = (
            entry.delivery,
            entry.received_at,
            entry.signed_at,
            entry.knowledge,
            self.dialect.array(entry.changed),
            entry.status,
            entry.detail,
            entry.updated_at,
        )
        with self._transaction() as run:
            inserted = run(
                self._sql(
                    f"INSERT INTO {{t}}webhook_deliveries ({_COLUMNS}) "  # noqa: S608 - constant
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (delivery) DO NOTHING RETURNING 1"
                ),
                row,
            ).fetchone()
            first = (
                None
                if inserted is not None
                else run(
                    self._sql("SELECT received_at FROM {t}webhook_deliveries WHERE delivery = ?"),
                    (delivery,),
                ).fetchone()
            )
        if inserted is None:
            raise DuplicateDeliveryError(delivery, float(first[0]) if first is not None else None)
        return entry

    def mark(self, delivery: str, status: DeliveryStatus, detail: str | None = None) -> None:
        """Set a delivery's status (and what happened); an unknown id raises InvalidInputError."""
        if status not in STATUSES:
            raise InvalidInputError(
                f"unknown delivery status {status!r}", hint=f"use one of {', '.join(STATUSES)}"
            )
        updated = self._count(
            "UPDATE {t}webhook_deliveries SET status = ?, detail = ?, updated_at = ? "
            "WHERE delivery = ?",
            (status, detail, time.time(), delivery),
        )
        if not updated:
            raise InvalidInputError(f"no webhook delivery {delivery!r} in the ledger")

    def get(self, delivery: str) -> Delivery | None:
        """One delivery, or ``None``."""
        row = self._one(
            f"SELECT {_COLUMNS} FROM {{t}}webhook_deliveries WHERE delivery = ?",  # noqa: S608
            (delivery,),
        )
        return _row(row) if row is not None else None

    def pending(self) -> list[Delivery]:
        """Recorded but never dispatched, oldest first: what to dispatch again at start-up."""
        rows = self._all(
            f"SELECT {_COLUMNS} FROM {{t}}webhook_deliveries "  # noqa: S608 - constant
            "WHERE status = 'recorded' ORDER BY received_at, {seq}"
        )
        return [_row(r) for r in rows]

    def entries(self, limit: int = 100) -> list[Delivery]:
        """The newest deliveries first."""
        rows = self._all(
            f"SELECT {_COLUMNS} FROM {{t}}webhook_deliveries "  # noqa: S608 - constant
            "ORDER BY received_at DESC, {seq} DESC LIMIT ?",
            (max(0, limit),),
        )
        return [_row(r) for r in rows]


class SqliteChangeLedger(SqliteTables, ChangeLedger):
    """Webhook deliveries in a SQLite file (a ``sqlite:///`` URL, usually the store's).

    Thread-safe: one connection, one lock.
    """

    def __init__(self, url: str) -> None:
        super().__init__(connect(url, _SCHEMA))
