"""The audit and miss log in Postgres: :class:`stores.audit.SqliteAuditLog`'s twin.

Batches arrive from the service's background writer (``serving/audit.py``) and go in with
``COPY`` in one transaction: a batch is all there, or (on error, re-queued by the writer) not
at all. Queries mirror the SQLite ones, so both logs summarize the same events identically.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Final

import msgspec

from stores._pg import PgComponent
from stores.audit import AuditEvent, MissSummary, answer_from_row, miss_from_row

__all__ = ["PostgresAuditLog"]

_COPY_ANSWERS: Final = (
    "COPY ragc.audit_answers "
    "(ts, tenant, version, layer, cache_key, entry_id, latency_ms, normalized) FROM STDIN"
)
_COPY_MISSES: Final = (
    "COPY ragc.audit_misses "
    "(ts, tenant, version, question, normalized, best_guess, best_score, candidates) FROM STDIN"
)
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


def _month_start(now: datetime) -> float:
    return now.replace(day=1, hour=0, minute=0, second=0, microsecond=0).timestamp()


def _text(value: str) -> str:
    """Postgres text cannot hold NUL; one stray NUL must not make a whole batch fail forever."""
    return value.replace("\x00", "\ufffd")


def _maybe(value: str | None) -> str | None:
    return None if value is None else _text(value)


class PostgresAuditLog(PgComponent):
    """Audit and miss log in the Postgres warm tier (a DSN, or an injected pool)."""

    def record(self, events: Sequence[AuditEvent]) -> None:
        """Append a batch of answers (SAFE ones also to the miss log) in one transaction."""
        if not events:
            return
        misses = [e for e in events if e.layer == "SAFE"]
        with self._connection() as conn, conn.cursor() as cur:
            with cur.copy(_COPY_ANSWERS) as copy:
                for e in events:
                    copy.write_row(
                        (
                            e.ts,
                            _maybe(e.tenant),
                            _text(e.version),
                            _text(e.layer),
                            _maybe(e.cache_key),
                            _maybe(e.entry_id),
                            e.latency_ms,
                            _text(e.normalized),
                        )
                    )
            if not misses:
                return
            with cur.copy(_COPY_MISSES) as copy:
                for e in misses:
                    best = e.candidates[0] if e.candidates else None
                    copy.write_row(
                        (
                            e.ts,
                            _maybe(e.tenant),
                            _text(e.version),
                            _text(e.question[:2000]),
                            _text(e.normalized),
                            _maybe(best[0]) if best else None,
                            best[1] if best else 0.0,
                            _text(msgspec.json.encode(e.candidates).decode()),
                        )
                    )

    def misses(
        self, *, tenant: str | None = None, since: float = 0.0, limit: int = 50
    ) -> list[MissSummary]:
        """The most frequent misses (optionally of one tenant), most frequent first."""
        args: tuple[object, ...] = (since,)
        sql = _MISSES_HEAD
        if tenant is not None:
            sql += " AND m.tenant = %s"
            args += (tenant,)
        args += (limit if limit >= 0 else None,)  # like SQLite, a negative limit means none
        with self._connection() as conn:
            rows = conn.execute(sql + _MISSES_TAIL, args).fetchall()
        return [miss_from_row(r, r[4] or ()) for r in rows]

    def miss_questions(self, limit: int = 1000) -> list[str]:
        """One example question per distinct missed question, most frequent first."""
        return [m.example for m in self.misses(limit=limit)]

    def l3_spent(self, *, now: datetime | None = None) -> dict[str | None, int]:
        """L3 answers per tenant since the start of the current month (UTC)."""
        start = _month_start(now or datetime.now(UTC))
        with self._connection() as conn:
            rows = conn.execute(
                "SELECT tenant, COUNT(*) FROM ragc.audit_answers WHERE layer = 'L3' AND ts >= %s "
                "GROUP BY tenant",
                (start,),
            ).fetchall()
        return {r[0]: int(r[1]) for r in rows}

    def answers(self, *, limit: int = 100) -> list[AuditEvent]:
        """The newest audited answers (for inspection and tests)."""
        with self._connection() as conn:
            rows = conn.execute(
                "SELECT ts, tenant, version, layer, cache_key, entry_id, latency_ms, normalized "
                "FROM ragc.audit_answers ORDER BY ts DESC, id DESC LIMIT %s",
                (limit if limit >= 0 else None,),
            ).fetchall()
        return [answer_from_row(r) for r in rows]
