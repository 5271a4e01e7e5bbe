"""The audit and miss log in Postgres: :class:`stores.audit.SqliteAuditLog`'s twin.

Batches arrive from the service's background writer (``serving/audit.py``) and go in with
``COPY`` in one transaction: a batch is all there, or (on error, re-queued by the writer) not
at all. Queries mirror the SQLite ones, so both logs summarize the same events identically.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

from stores._pg import PgTables
from stores.audit import (
    ANSWER_COLUMNS,
    MISS_COLUMNS,
    AuditEvent,
    AuditTables,
    MissSummary,
    answer_row,
    miss_from_row,
    miss_row,
)

__all__ = ["PostgresAuditLog"]

_COPY_ANSWERS: Final = f"COPY ragc.audit_answers ({ANSWER_COLUMNS}) FROM STDIN"
_COPY_MISSES: Final = f"COPY ragc.audit_misses ({MISS_COLUMNS}) FROM STDIN"
# Grouped like SqliteAuditLog.misses: MIN in byte order (COLLATE "C", as SQLite's BINARY), the
# best guess of the newest miss of that text (over every tenant and time, as in SQLite), the
# tenants without NULL or ''. Ties are broken explicitly where SQLite leaves them unspecified.
_MISSES_HEAD: Final = (
    'SELECT m.normalized, MIN(m.question COLLATE "C"), COUNT(*), MAX(m.ts), '
    "array_agg(DISTINCT m.tenant) FILTER (WHERE m.tenant <> ''), "
    "(SELECT g.best_guess FROM ragc.audit_misses g WHERE g.normalized = m.normalized "
    " ORDER BY g.ts DESC, g.id DESC LIMIT 1), "
    "MAX(m.best_score) "
    "FROM ragc.audit_misses m WHERE m.ts >= %s"
)
_MISSES_TAIL: Final = (
    " GROUP BY m.normalized ORDER BY COUNT(*) DESC, MAX(m.ts) DESC, m.normalized LIMIT %s"
)


def _text(value: object) -> object:
    """Postgres text cannot hold NUL; one stray NUL must not make a whole batch fail forever."""
    return value.replace("\x00", "\ufffd") if isinstance(value, str) else value


class PostgresAuditLog(PgTables, AuditTables):
    """Audit and miss log in the Postgres warm tier (a DSN, or an injected pool)."""

    seq = "id"

    def record(self, events: Sequence[AuditEvent]) -> None:
        """Append a batch of answers (SAFE ones also to the miss log) in one transaction."""
        if not events:
            return
        misses = [e for e in events if e.layer == "SAFE"]
        with self._connection() as conn, conn.cursor() as cur:
            with cur.copy(_COPY_ANSWERS) as copy:
                for e in events:
                    copy.write_row(tuple(map(_text, answer_row(e))))
            if not misses:
                return
            with cur.copy(_COPY_MISSES) as copy:
                for e in misses:
                    copy.write_row(tuple(map(_text, miss_row(e))))

    def misses(
        self, *, tenant: str | None = None, since: float = 0.0, limit: int = 50
    ) -> list[MissSummary]:
        """The most frequent misses (optionally of one tenant), most frequent first."""
        args: tuple[object, ...] = (since,)
        sql = _MISSES_HEAD
        if tenant is not None:
            sql += " AND m.tenant = %s"
            args += (tenant,)
        args += (self.dialect.limit(limit),)
        with self._connection() as conn:
            rows = conn.execute(sql + _MISSES_TAIL, args).fetchall()
        return [miss_from_row(r, r[4] or ()) for r in rows]
