"""Postgres plumbing shared by the warm-tier stores: DSNs, connections, pools, errors, migrations.

The public face is :mod:`stores.postgres`; this module holds what the per-concern modules
(``_pg_audit``, ``_pg_review``, ``_pg_ledger``, ``_pg_versions``) share, so they need not import
the façade that re-exports them.
"""

from __future__ import annotations

import functools
import hashlib
import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from importlib import resources
from typing import Any, Final, TypeAlias

import msgspec
import psycopg
from psycopg import errors
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg.rows import TupleRow
from psycopg_pool import ConnectionPool, PoolClosed, PoolTimeout
from psycopg_pool.base import AttemptWithBackoff

from schemas.errors import InvalidInputError, RagcError, StoreConfigError, StoreUnavailableError
from schemas.redact import redact
from stores._sql import POSTGRES, Run, SqlTables

__all__ = [
    "BREAKER_S",
    "SCHEMA",
    "Breaker",
    "Migration",
    "NotMigratedError",
    "PgComponent",
    "PgTables",
    "Pool",
    "WarmPool",
    "connect",
    "expected_revision",
    "migrations",
    "open_pool",
    "redact",
    "translate_errors",
    "utc_time",
]

Pool: TypeAlias = "ConnectionPool[psycopg.Connection[TupleRow]]"
"""A pool of plain (tuple-row) connections, as :func:`open_pool` makes them."""

SCHEMA: Final = "ragc"
"""The Postgres schema every warm-tier table lives in."""

CONNECT_TIMEOUT: Final = 3
"""Seconds to wait for a new connection, unless the DSN sets ``connect_timeout`` itself."""
POOL_TIMEOUT: Final = 3.0
"""Seconds a call waits for a pooled connection before it fails (psycopg's default is 30)."""
RECONNECT_S: Final = 1.0
"""Longest pause between a pool's attempts to reconnect to a server that went away."""
BREAKER_S: Final = 1.0
"""After a call finds the server unreachable, calls on the same pool fail at once for this
long; then the next one tries again."""

START_HINT: Final = (
    "is PostgreSQL running there? Start it (e.g. `pg_ctlcluster 15 main start`, "
    "`systemctl start postgresql` or `docker run -d -p 5432:5432 "
    "-e POSTGRES_PASSWORD=... postgres:15`) or fix the DSN (--dsn / RAGC_WARM_DSN)"
)

_CONFIG_PROBLEMS: Final = re.compile(
    r"authentication failed|does not exist|no pg_hba\.conf entry|permission denied", re.I
)
# Server errors that mean the server went away or will not take connections (sqlstate classes).
_UNAVAILABLE_STATES: Final = ("08", "57P01", "57P02", "57P03", "53300")


class NotMigratedError(StoreConfigError):
    """The warm-tier database lacks the schema this ragc needs: run ``ragc db upgrade``."""

    def __init__(self, dsn: str, revision: str | None, expected: str) -> None:
        self.revision = revision
        self.expected = expected
        found = f"is at schema revision {revision}" if revision else "has no ragc schema"
        super().__init__(
            f"the Postgres warm tier at {redact(dsn)} {found}; this ragc needs revision {expected}",
            hint="migrate it: `ragc db upgrade --dsn DSN` (or with RAGC_WARM_DSN set)",
        )


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())


def _connection_error(dsn: str, exc: psycopg.OperationalError) -> RagcError | None:
    """A clear ragc error for a connection failure, or None when ``exc`` is something else."""
    if isinstance(exc, PoolTimeout):
        return StoreUnavailableError(
            f"no connection to the Postgres warm tier at {redact(dsn)} became available "
            f"in time ({_one_line(exc)})",
            hint=START_HINT,
        )
    state = exc.sqlstate
    if state is not None and not state.startswith(_UNAVAILABLE_STATES):
        return None
    reason = _one_line(exc)
    if state is None and _CONFIG_PROBLEMS.search(reason):
        return StoreConfigError(
            f"the Postgres warm tier at {redact(dsn)} refused the connection: {reason}",
            hint="check the user, password and database name in the DSN",
        )
    return StoreUnavailableError(
        f"cannot reach the Postgres warm tier at {redact(dsn)}: {reason}",
        hint=START_HINT,
    )


@contextmanager
def translate_errors(dsn: str) -> Iterator[None]:
    """Turn connection failures and a missing schema into ragc's errors (others pass through)."""
    try:
        yield
    except PoolClosed:
        raise  # a programming error: someone used a component after closing its pool
    except (errors.UndefinedTable, errors.InvalidSchemaName) as exc:
        raise NotMigratedError(dsn, None, expected_revision()) from exc
    except psycopg.OperationalError as exc:
        mapped = _connection_error(dsn, exc)
        if mapped is None:
            raise
        raise mapped from exc


def _conninfo(dsn: str) -> str:
    """``dsn`` with defaults for options it leaves out; an unparseable DSN is a StoreConfigError."""
    try:
        given = conninfo_to_dict(dsn)
    except psycopg.ProgrammingError as exc:
        raise StoreConfigError(
            f"the Postgres DSN {redact(dsn)!r} is not valid: {_one_line(exc)}",
            hint="use postgresql://user:password@host:5432/dbname or 'host=... dbname=...'",
        ) from exc
    defaults: dict[str, str | int] = {
        "connect_timeout": CONNECT_TIMEOUT,
        "application_name": "ragc",
    }
    return make_conninfo(dsn, **{k: v for k, v in defaults.items() if k not in given})


def connect(dsn: str, *, autocommit: bool = True) -> psycopg.Connection[TupleRow]:
    """One connection (the caller closes it); failures become ragc errors naming the DSN."""
    conninfo = _conninfo(dsn)
    with translate_errors(dsn):
        return psycopg.connect(conninfo, autocommit=autocommit)


class Breaker:
    """Fails calls at once while their server is known to be away (a circuit breaker).

    A call that finds the server unreachable trips it for :data:`BREAKER_S`; calls in that
    window fail with the same error at once, instead of each waiting for a connection; the
    first call after it tries again, and a success closes it.
    """

    def __init__(self, hold: float = BREAKER_S) -> None:
        self.hold = hold
        self._tripped = 0.0
        self._error: StoreUnavailableError | None = None
        self._lock = threading.Lock()

    def check(self) -> None:
        """Raise the last error while the breaker is open."""
        with self._lock:
            error, tripped = self._error, self._tripped
        if error is not None and time.monotonic() < tripped + self.hold:
            raise StoreUnavailableError(
                f"{error.message} (failing fast; the next call within {self.hold:g} s tries again)",
                hint=error.hint,
            )

    def trip(self, error: StoreUnavailableError) -> None:
        with self._lock:
            self._error, self._tripped = error, time.monotonic()

    def reset(self) -> None:
        if self._error is not None:
            with self._lock:
                self._error, self._tripped = None, 0.0


class _Reconnect(AttemptWithBackoff):
    """psycopg's reconnect attempt, its backoff capped at :data:`RECONNECT_S` (uncapped it
    doubles to a minute and more, so a pool came back that long after its server did)."""

    def update_delay(self, now: float) -> None:
        super().update_delay(now)
        self.delay = min(self.delay, RECONNECT_S)


class WarmPool(ConnectionPool[psycopg.Connection[TupleRow]]):
    """psycopg's connection pool, reconnecting at least every second while its server is away,
    with the :class:`Breaker` its components share."""

    def __init__(self, conninfo: str, **kwargs: Any) -> None:
        super().__init__(conninfo, **kwargs)
        self.breaker = Breaker()

    def _add_connection(self, attempt: AttemptWithBackoff | None, growing: bool = False) -> None:
        attempt = attempt or _Reconnect(timeout=self.reconnect_timeout)
        super()._add_connection(attempt, growing)


def open_pool(
    dsn: str,
    *,
    min_size: int = 1,
    max_size: int = 8,
    timeout: float = POOL_TIMEOUT,
    name: str = "ragc-warm",
) -> Pool:
    """Open a connection pool and wait for its first connection. Whoever opens it closes it.

    ``timeout`` bounds both the wait for the pool to fill and, later, each wait for a free
    connection: a dead server fails a call in ``timeout`` seconds (then, for a second, at
    once: :class:`Breaker`), and the pool reconnects within a second of its return.
    """
    connect(dsn).close()  # fail fast, with the server's own reason, before any worker starts
    pool: Pool = WarmPool(
        _conninfo(dsn),
        min_size=min_size,
        max_size=max(min_size, max_size),
        timeout=timeout,
        open=False,
        check=ConnectionPool.check_connection,
        name=name,
    )
    try:
        with translate_errors(dsn):
            pool.open(wait=True, timeout=timeout)
    except BaseException:
        pool.close()
        raise
    return pool


def utc_time(value: str, what: str) -> datetime:
    """An ISO 8601 time for a ``timestamptz`` column (UTC when it names no zone); an
    InvalidInputError naming ``what`` when it is unreadable."""
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError as exc:
        raise InvalidInputError(
            f"{what} has an unreadable time {value!r}",
            hint="use an ISO 8601 time such as 2026-01-01T00:00:00+00:00",
        ) from exc
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


class Migration(msgspec.Struct, frozen=True, kw_only=True):
    """One versioned SQL file of ``stores/migrations``."""

    version: str
    """Its four-digit number, ``0001``."""
    name: str
    """Its file name without ``.sql``, ``0001_warm_tier``."""
    sql: str
    checksum: str
    """SHA-256 of its text (line endings normalized), recorded when it is applied."""


_MIGRATION_FILE: Final = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql\Z")


@functools.cache
def migrations() -> tuple[Migration, ...]:
    """Every migration shipped with this ragc, in order."""
    found: dict[str, Migration] = {}
    for item in resources.files("stores").joinpath("migrations").iterdir():
        match = _MIGRATION_FILE.match(item.name)
        if match is None:
            continue
        text = item.read_text(encoding="utf-8").replace("\r\n", "\n")
        if match[1] in found:
            raise StoreConfigError(
                f"two migrations share number {match[1]}: {found[match[1]].name} and {item.name}"
            )
        found[match[1]] = Migration(
            version=match[1],
            name=item.name.removesuffix(".sql"),
            sql=text,
            checksum=hashlib.sha256(text.encode()).hexdigest(),
        )
    if not found:
        raise StoreConfigError("no migrations found in stores/migrations (a broken install?)")
    return tuple(found[v] for v in sorted(found))


def expected_revision() -> str:
    """The schema revision this ragc needs: its newest migration."""
    return migrations()[-1].version


class PgComponent:
    """A warm-tier component on a connection pool: its own (opened from a DSN) or an injected one.

    An injected pool stays open when the component closes; its opener closes it. Construction
    checks that the database is migrated to :func:`expected_revision`.
    """

    def __init__(self, dsn: str | None = None, *, pool: Pool | None = None) -> None:
        if pool is None:
            if not dsn:
                raise StoreConfigError(
                    f"{type(self).__name__} needs a Postgres DSN or a pool",
                    hint="pass postgresql://... (RAGC_WARM_DSN) or a pool from open_pool()",
                )
            pool = open_pool(dsn)
            self._owns_pool = True
        else:
            self._owns_pool = False
        self._pool = pool
        self._breaker: Breaker = pool.breaker if isinstance(pool, WarmPool) else Breaker()
        self.dsn = dsn or (pool.conninfo if isinstance(pool.conninfo, str) else f"<{pool.name}>")
        try:
            self._require_revision()
        except BaseException:
            self.close()
            raise

    @property
    def pool(self) -> Pool:
        return self._pool

    @contextmanager
    def _connection(self) -> Iterator[psycopg.Connection[TupleRow]]:
        """A pooled connection in a transaction: committed on success, rolled back on error.
        An unreachable server fails it at once while the pool's :class:`Breaker` is open."""
        self._breaker.check()
        try:
            with translate_errors(self.dsn), self._pool.connection() as conn:
                yield conn
        except StoreUnavailableError as exc:
            self._breaker.trip(exc)
            raise
        self._breaker.reset()

    def _require_revision(self) -> None:
        expected = expected_revision()
        with self._connection() as conn:
            row = conn.execute(
                "SELECT max(version) FROM ragc.schema_migrations WHERE version <= %s", (expected,)
            ).fetchone()
        revision = row[0] if row is not None else None
        if revision != expected:
            raise NotMigratedError(self.dsn, revision, expected)

    def close(self) -> None:
        """Close the pool if this component opened it (an injected pool stays open)."""
        if self._owns_pool:
            self._pool.close()


class PgTables(PgComponent, SqlTables):
    """:class:`stores._sql.SqlTables` on the warm tier: each transaction on a pooled connection."""

    dialect = POSTGRES
    seq = "seq"

    @contextmanager
    def _transaction(self) -> Iterator[Run]:
        with self._connection() as conn:
            yield conn.execute
