"""The Postgres warm tier: schema migrations, a connection pool, and the shared stores.

What several service replicas and the compiler share lives here rather than in the embedded
SQLite file: the audit and miss log, the review queue, the webhook change ledger, the tenant
keys and the catalogue of published versions. Each class has the same public methods and
return types as its SQLite twin (:mod:`stores.audit`, :mod:`stores.review`,
:mod:`stores.ledger`, :mod:`stores.tenant_keys`), so callers can take either.

Schema changes are versioned SQL files in ``stores/migrations`` (``0001_warm_tier.sql``, ...),
applied by :func:`migrate` (``ragc db upgrade``): each pending file in order, each in its own
transaction, all under one advisory lock so concurrent upgraders (say, two replicas starting
at once) apply every migration exactly once. Components refuse to work on a database that is
not migrated to the revision this ragc ships (:class:`NotMigratedError`).

Pools: :func:`open_pool` opens one explicitly; whoever opens a pool closes it. A component
made from a DSN opens (and on ``close()`` closes) its own small pool; pass ``pool=`` to share
one pool between components, which then leave it open.
"""

from __future__ import annotations

import contextlib
from datetime import UTC
from typing import Final

import msgspec
import psycopg
from psycopg import errors
from psycopg.rows import TupleRow

from schemas.errors import PermanentError, RetryableError
from stores._pg import (
    SCHEMA,
    Migration,
    NotMigratedError,
    Pool,
    connect,
    expected_revision,
    migrations,
    open_pool,
    redact,
    translate_errors,
)
from stores._pg_audit import PostgresAuditLog
from stores._pg_ledger import PostgresChangeLedger
from stores._pg_review import PostgresReviewQueue
from stores._pg_tenant_keys import PostgresTenantKeys
from stores._pg_versions import PostgresVersionCatalog

__all__ = [
    "LOCK_KEY",
    "SCHEMA",
    "AppliedMigration",
    "Migration",
    "MigrationLockedError",
    "MigrationStatus",
    "NotMigratedError",
    "Pool",
    "PostgresAuditLog",
    "PostgresChangeLedger",
    "PostgresReviewQueue",
    "PostgresTenantKeys",
    "PostgresVersionCatalog",
    "current_revision",
    "expected_revision",
    "migrate",
    "migration_status",
    "migrations",
    "open_pool",
    "redact",
]

LOCK_KEY: Final = 0x7261_6763
"""The session advisory lock every upgrader holds while migrating (``'ragc'`` in ASCII)."""


class MigrationLockedError(RetryableError):
    """Another upgrader held the migration lock for longer than the lock timeout."""


class AppliedMigration(msgspec.Struct, frozen=True, kw_only=True):
    """A migration recorded in ``ragc.schema_migrations``."""

    version: str
    name: str
    applied_at: str
    changed: bool = False
    """The shipped file no longer matches what was applied (applied migrations are immutable)."""


class MigrationStatus(msgspec.Struct, frozen=True, kw_only=True):
    """Where a warm-tier database stands against the migrations this ragc ships."""

    dsn: str
    """The DSN, password redacted."""
    revision: str | None
    expected: str
    applied: tuple[AppliedMigration, ...] = ()
    pending: tuple[str, ...] = ()

    @property
    def up_to_date(self) -> bool:
        return not self.pending


def _applied(conn: psycopg.Connection[TupleRow]) -> list[AppliedMigration]:
    row = conn.execute("SELECT to_regclass('ragc.schema_migrations') IS NOT NULL").fetchone()
    if row is None or not row[0]:
        return []
    shipped = {m.version: m.checksum for m in migrations()}
    rows = conn.execute(
        "SELECT version, name, checksum, applied_at FROM ragc.schema_migrations ORDER BY version"
    ).fetchall()
    return [
        AppliedMigration(
            version=r[0],
            name=r[1],
            applied_at=r[3].astimezone(UTC).isoformat(timespec="seconds"),
            changed=r[0] in shipped and shipped[r[0]] != r[2],
        )
        for r in rows
    ]


def _refuse_changed(dsn: str, applied: list[AppliedMigration]) -> None:
    changed = [a.name for a in applied if a.changed]
    if changed:
        raise PermanentError(
            f"migration {', '.join(changed)} was changed after it was applied to "
            f"{redact(dsn)}; applied migrations are immutable",
            hint="restore the shipped file and add the change as a new migration",
        )


def _apply(conn: psycopg.Connection[TupleRow], migration: Migration) -> None:
    try:
        with conn.transaction():
            conn.execute(migration.sql.encode())  # several statements: simple query protocol
            conn.execute(
                "INSERT INTO ragc.schema_migrations (version, name, checksum) VALUES (%s, %s, %s)",
                (migration.version, migration.name, migration.checksum),
            )
    except errors.LockNotAvailable as exc:
        raise MigrationLockedError(
            f"migration {migration.name} waited longer than the lock timeout for a table lock; "
            "nothing of it was applied",
            hint="run `ragc db upgrade` again when the tables are less busy",
        ) from exc
    except psycopg.OperationalError:
        raise  # connection trouble: translate_errors reports it
    except psycopg.Error as exc:
        raise PermanentError(
            f"migration {migration.name} failed: {' '.join(str(exc).split())}",
            hint="nothing of it was applied (it ran in one transaction); fix and run it again",
        ) from exc


def migrate(dsn: str, *, lock_timeout: float = 60.0) -> list[str]:
    """Apply every pending migration in order; returns the names applied (``[]``: up to date).

    Safe to run concurrently: upgraders queue on an advisory lock, and each finds what the
    previous one applied. ``lock_timeout`` (seconds) bounds the wait for that lock and for
    table locks a migration needs; past it, :class:`MigrationLockedError` (retryable).
    """
    with connect(dsn) as conn, translate_errors(dsn):
        conn.execute(
            "SELECT set_config('lock_timeout', %s, false)", (f"{int(lock_timeout * 1000)}ms",)
        )
        try:
            conn.execute("SELECT pg_advisory_lock(%s)", (LOCK_KEY,))
        except errors.LockNotAvailable as exc:
            raise MigrationLockedError(
                f"another `ragc db upgrade` held the migration lock of {redact(dsn)} for "
                f"more than {lock_timeout:g}s",
                hint="wait for it to finish and run `ragc db upgrade` again",
            ) from exc
        try:
            applied = _applied(conn)
            _refuse_changed(dsn, applied)
            done = {a.version for a in applied}
            names: list[str] = []
            for migration in migrations():
                if migration.version not in done:
                    _apply(conn, migration)
                    names.append(migration.name)
            return names
        finally:
            # Closing the connection releases the lock too; never mask the real error.
            with contextlib.suppress(psycopg.Error):
                conn.execute("SELECT pg_advisory_unlock(%s)", (LOCK_KEY,))


def current_revision(dsn: str) -> str | None:
    """The newest migration applied to the database, or None when it has no ragc schema."""
    with connect(dsn) as conn, translate_errors(dsn):
        applied = _applied(conn)
    return applied[-1].version if applied else None


def migration_status(dsn: str) -> MigrationStatus:
    """Applied and pending migrations of the database at ``dsn``."""
    with connect(dsn) as conn, translate_errors(dsn):
        applied = _applied(conn)
    done = {a.version for a in applied}
    return MigrationStatus(
        dsn=redact(dsn),
        revision=applied[-1].version if applied else None,
        expected=expected_revision(),
        applied=tuple(applied),
        pending=tuple(m.name for m in migrations() if m.version not in done),
    )
