"""The change ledger in Postgres: :class:`stores.ledger.SqliteChangeLedger`'s twin.

The delivery id is the primary key and :meth:`PostgresChangeLedger.record` inserts with
``ON CONFLICT DO NOTHING``: of any number of concurrent replays (across processes and hosts)
exactly one row is inserted, and every other caller gets :class:`DuplicateDeliveryError`.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any, Final

import msgspec

from schemas.errors import InvalidInputError
from stores._pg import PgComponent
from stores.ledger import (
    STATUSES,
    Delivery,
    DeliveryStatus,
    DuplicateDeliveryError,
    new_delivery,
)

__all__ = ["PostgresChangeLedger"]

_COLUMNS: Final = "delivery, received_at, signed_at, knowledge, changed, status, detail, updated_at"


def _row(row: Sequence[Any]) -> Delivery:
    return msgspec.convert(
        {
            "delivery": row[0],
            "received_at": row[1],
            "signed_at": row[2],
            "knowledge": row[3],
            "changed": row[4],
            "status": row[5],
            "detail": row[6],
            "updated_at": row[7],
        },
        Delivery,
    )


class PostgresChangeLedger(PgComponent):
    """Webhook deliveries in the Postgres warm tier (a DSN, or an injected pool). Thread-safe."""

    def seen(self, delivery: str) -> bool:
        """A delivery with this id was already recorded."""
        with self._connection() as conn:
            row = conn.execute(
                "SELECT 1 FROM ragc.webhook_deliveries WHERE delivery = %s", (delivery,)
            ).fetchone()
        return row is not None

    def record(
        self,
        delivery: str,
        *,
        signed_at: int,
        knowledge: str,
        changed: Sequence[str],
        received_at: float | None = None,
    ) -> Delivery:
        """Record an accepted delivery as ``recorded``; a known id raises DuplicateDeliveryError."""
        entry = new_delivery(delivery, signed_at, knowledge, changed, received_at)
        with self._connection() as conn:
            inserted = conn.execute(
                f"INSERT INTO ragc.webhook_deliveries ({_COLUMNS}) "  # noqa: S608 - constant
                "VALUES (%s, %s, %s, %s, %s, %s, %s, %s) "
                "ON CONFLICT (delivery) DO NOTHING RETURNING 1",
                (
                    entry.delivery,
                    entry.received_at,
                    entry.signed_at,
                    entry.knowledge,
                    list(entry.changed),
                    entry.status,
                    entry.detail,
                    entry.updated_at,
                ),
            ).fetchone()
            first = (
                None
                if inserted is not None
                else conn.execute(
                    "SELECT received_at FROM ragc.webhook_deliveries WHERE delivery = %s",
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
        with self._connection() as conn:
            updated = conn.execute(
                "UPDATE ragc.webhook_deliveries SET status = %s, detail = %s, updated_at = %s "
                "WHERE delivery = %s",
                (status, detail, time.time(), delivery),
            ).rowcount
        if not updated:
            raise InvalidInputError(f"no webhook delivery {delivery!r} in the ledger")

    def get(self, delivery: str) -> Delivery | None:
        """One delivery, or ``None``."""
        with self._connection() as conn:
            row = conn.execute(
                f"SELECT {_COLUMNS} FROM ragc.webhook_deliveries "  # noqa: S608 - constant
                "WHERE delivery = %s",
                (delivery,),
            ).fetchone()
        return _row(row) if row is not None else None

    def pending(self) -> list[Delivery]:
        """Recorded but never dispatched, oldest first: what to dispatch again at start-up."""
        with self._connection() as conn:
            rows = conn.execute(
                f"SELECT {_COLUMNS} FROM ragc.webhook_deliveries "  # noqa: S608 - constant
                "WHERE status = 'recorded' ORDER BY received_at, seq"
            ).fetchall()
        return [_row(r) for r in rows]

    def entries(self, limit: int = 100) -> list[Delivery]:
        """The newest deliveries first."""
        with self._connection() as conn:
            rows = conn.execute(
                f"SELECT {_COLUMNS} FROM ragc.webhook_deliveries "  # noqa: S608 - constant
                "ORDER BY received_at DESC, seq DESC LIMIT %s",
                (max(0, limit),),
            ).fetchall()
        return [_row(r) for r in rows]
