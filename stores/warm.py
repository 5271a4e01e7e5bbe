"""The warm tier, decided once: where the audit log, miss log, review queue, webhook ledger, tenant
keys and version catalogue of one deployment live.

With a Postgres DSN (``RAGC_WARM_DSN``) they live there, on one connection pool; otherwise the
audit log, review queue, ledger and tenant keys live in the snapshot store's SQLite file, and a
store that is not a file (Redis) has none of them. Every caller (the service, the compile, the
CLI) opens them through :class:`WarmTier`, so the answers to "where is it?" cannot drift apart.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, TypeVar

from schemas.errors import StoreConfigError
from stores.audit import AuditLog, SqliteAuditLog
from stores.ledger import ChangeLedger, SqliteChangeLedger
from stores.review import ReviewQueue, SqliteReviewQueue
from stores.tenant_keys import SqliteTenantKeys, TenantKeys

if TYPE_CHECKING:
    from schemas.manifest import Snapshot
    from stores._pg import Pool

__all__ = ["WarmTier"]

T = TypeVar("T")

_HINT = "set RAGC_WARM_DSN (Postgres), or use a sqlite:/// store"


class WarmTier:
    """Opens the warm-tier stores for a snapshot store URL and an optional Postgres DSN.

    The components it opens are the caller's to close. On Postgres each opens its own pool
    from the DSN (closed with it), or shares an injected ``pool`` (its opener closes it: the
    service opens one for all of them).
    """

    def __init__(self, store_url: str, dsn: str | None = None, *, pool: Pool | None = None) -> None:
        self.store_url = store_url
        self.dsn = dsn or None
        self._pool = pool

    @property
    def postgres(self) -> bool:
        """Whether the warm tier is Postgres (else the store's SQLite file, if it is one)."""
        return self.dsn is not None or self._pool is not None

    @property
    def embedded(self) -> bool:
        """Whether the components live in the snapshot store's SQLite file."""
        return not self.postgres and self.store_url.startswith("sqlite:///")

    def audit_log(self) -> AuditLog | None:
        """The audit and miss log, or ``None`` when the store has nowhere to keep one."""
        if self.postgres:
            from stores.postgres import PostgresAuditLog  # noqa: PLC0415

            return PostgresAuditLog(self.dsn, pool=self._pool)
        return SqliteAuditLog(self.store_url) if self.embedded else None

    def review_queue(self) -> ReviewQueue | None:
        """The review queue, or ``None`` when the store has nowhere to keep one."""
        if self.postgres:
            from stores.postgres import PostgresReviewQueue  # noqa: PLC0415

            return PostgresReviewQueue(self.dsn, pool=self._pool)
        return SqliteReviewQueue(self.store_url) if self.embedded else None

    def ledger(self) -> ChangeLedger | None:
        """The webhook's durable delivery ledger, or ``None`` when there is nowhere to keep it."""
        if self.postgres:
            from stores.postgres import PostgresChangeLedger  # noqa: PLC0415

            return PostgresChangeLedger(self.dsn, pool=self._pool)
        return SqliteChangeLedger(self.store_url) if self.embedded else None

    def tenant_keys(self) -> TenantKeys | None:
        """The tenant API keys, or ``None`` when there is nowhere to keep them."""
        if self.postgres:
            from stores.postgres import PostgresTenantKeys  # noqa: PLC0415

            return PostgresTenantKeys(self.dsn, pool=self._pool)
        return SqliteTenantKeys(self.store_url) if self.embedded else None

    def record_catalogue(self, snapshot: Snapshot) -> bool:
        """Record a published version's manifest (and slot values) in the Postgres catalogue;
        ``False`` without a Postgres warm tier (the store is then the only catalogue)."""
        if not self.postgres:
            return False
        from stores.postgres import PostgresVersionCatalog  # noqa: PLC0415

        catalogue = PostgresVersionCatalog(self.dsn, pool=self._pool)
        try:
            return catalogue.record(snapshot.manifest, intents=snapshot.intents)
        finally:
            catalogue.close()

    @staticmethod
    def require(component: T | None, what: str) -> T:
        """``component``, or a :class:`StoreConfigError` naming what needs the warm tier."""
        if component is None:
            raise StoreConfigError(f"{what} needs a warm tier", hint=_HINT)
        return component
