"""The change ledger in Postgres: :class:`stores.ledger.SqliteChangeLedger`'s twin.

The statements are :class:`stores.ledger.ChangeLedger`'s, shared with SQLite: the delivery id is
the primary key and a record inserts with ``ON CONFLICT DO NOTHING``, so of any number of
concurrent replays (across processes and hosts) exactly one row is inserted, and every other
caller gets :class:`~stores.ledger.DuplicateDeliveryError`.
"""

from __future__ import annotations

from stores._pg import PgTables
from stores.ledger import ChangeLedger

__all__ = ["PostgresChangeLedger"]


class PostgresChangeLedger(PgTables, ChangeLedger):
    """Webhook deliveries in the Postgres warm tier (a DSN, or an injected pool). Thread-safe."""
