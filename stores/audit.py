"""The audit log of served answers and the miss log, embedded in the store's SQLite file.

Every answer is recorded (layer, version, cache key, tenant, latency); every SAFE answer is
also a miss, kept with the question, its normalized form and the router's best guesses so the
next compile can fold frequent misses back in. Writes arrive in batches from the service's
background writer, never on the answer path.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, Final, Protocol

import msgspec

from stores._sql import SqliteTables, SqlTables
from stores.sqlite import connect

__all__ = [
    "ANSWER_COLUMNS",
    "MISS_COLUMNS",
    "AuditEvent",
    "AuditLog",
    "AuditTables",
    "MissSummary",
    "SqliteAuditLog",
    "answer_from_row",
    "answer_row",
    "miss_from_row",
    "miss_row",
    "month_start",
]


class AuditEvent(msgspec.Struct, frozen=True, kw_only=True):
    """One served answer."""

    ts: float
    tenant: str | None
    version: str
    layer: str
    cache_key: str | None
    entry_id: str | None
    latency_ms: float
    question: str
    normalized: str
    confidence: float
    candidates: tuple[tuple[str, float], ...] = ()


class MissSummary(msgspec.Struct, frozen=True, kw_only=True):
    """Misses grouped by their normalized question: what the next compile should answer."""

    normalized: str
    example: str
    count: int
    last_seen: str
    tenants: tuple[str, ...]
    best_guess: str | None
    best_score: float


_SCHEMA = """
CREATE TABLE IF NOT EXISTS audit_answers (
    ts REAL NOT NULL, tenant TEXT, version TEXT NOT NULL, layer TEXT NOT NULL,
    cache_key TEXT, entry_id TEXT, latency_ms REAL NOT NULL, normalized TEXT NOT NULL
);
DROP INDEX IF EXISTS audit_answers_by_tenant;
CREATE INDEX IF NOT EXISTS audit_l3_by_time ON audit_answers (ts, tenant) WHERE layer = 'L3';
CREATE TABLE IF NOT EXISTS audit_misses (
    ts REAL NOT NULL, tenant TEXT, version TEXT NOT NULL, question TEXT NOT NULL,
    normalized TEXT NOT NULL, best_guess TEXT, best_score REAL NOT NULL, candidates BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS audit_misses_by_text ON audit_misses (normalized);
"""


def month_start(now: datetime) -> float:
    """Unix time of the start of ``now``'s calendar month."""
    return now.replace(day=1, hour=0, minute=0, second=0, microsecond=0).timestamp()


ANSWER_COLUMNS: Final = "ts, tenant, version, layer, cache_key, entry_id, latency_ms, normalized"
MISS_COLUMNS: Final = (
    "ts, tenant, version, question, normalized, best_guess, best_score, candidates"
)


def answer_row(event: AuditEvent) -> tuple[Any, ...]:
    """An audited answer as a row of :data:`ANSWER_COLUMNS`."""
    e = event
    return (e.ts, e.tenant, e.version, e.layer, e.cache_key, e.entry_id, e.latency_ms, e.normalized)


def miss_row(event: AuditEvent) -> tuple[Any, ...]:
    """A SAFE answer as a row of :data:`MISS_COLUMNS` (the candidates as JSON text)."""
    e = event
    best = e.candidates[0] if e.candidates else (None, 0.0)
    encoded = msgspec.json.encode(e.candidates).decode()
    return (e.ts, e.tenant, e.version, e.question[:2000], e.normalized, *best, encoded)


def answer_from_row(row: Sequence[Any]) -> AuditEvent:
    """An audited answer from a row of :data:`ANSWER_COLUMNS`."""
    fields = dict(zip(ANSWER_COLUMNS.split(", "), row, strict=True))
    return msgspec.convert({**fields, "question": "", "confidence": 0.0}, AuditEvent)


def miss_from_row(row: Sequence[Any], tenants: Sequence[str]) -> MissSummary:
    """A miss summary from a grouped row of (normalized, example, count, last ts, tenants,
    best guess, best score); each backend aggregates the tenants its own way."""
    return MissSummary(
        normalized=str(row[0]),
        example=str(row[1]),
        count=int(row[2]),
        last_seen=datetime.fromtimestamp(float(row[3]), UTC).isoformat(timespec="seconds"),
        tenants=tuple(sorted(tenants)),
        best_guess=row[5],
        best_score=round(float(row[6] or 0.0), 4),
    )


class AuditLog(Protocol):
    """The audit and miss log, embedded (SQLite) or warm (Postgres)."""

    def record(self, events: Sequence[AuditEvent]) -> None: ...

    def misses(
        self, *, tenant: str | None = None, since: float = 0.0, limit: int = 50
    ) -> list[MissSummary]: ...

    def miss_questions(self, limit: int = 1000) -> list[str]: ...

    def l3_spent(self, *, now: datetime | None = None) -> dict[str | None, int]: ...

    def close(self) -> None: ...


class AuditTables(SqlTables):
    """The audit log's statements that both tiers share."""

    @abstractmethod
    def misses(
        self, *, tenant: str | None = None, since: float = 0.0, limit: int = 50
    ) -> list[MissSummary]:
        """The most frequent misses (optionally of one tenant), most frequent first."""

    def miss_questions(self, limit: int = 1000) -> list[str]:
        """One example question per distinct missed question, most frequent first."""
        return [m.example for m in self.misses(limit=limit)]

    def l3_spent(self, *, now: datetime | None = None) -> dict[str | None, int]:
        """L3 answers per tenant since the start of the current month (UTC)."""
        rows = self._all(
            "SELECT tenant, COUNT(*) FROM {t}audit_answers WHERE layer = 'L3' AND ts >= ? "
            "GROUP BY tenant",
            (month_start(now or datetime.now(UTC)),),
        )
        return {r[0]: int(r[1]) for r in rows}

    def answers(self, *, limit: int = 100) -> list[AuditEvent]:
        """The newest audited answers (for inspection and tests)."""
        rows = self._all(
            f"SELECT {ANSWER_COLUMNS} FROM {{t}}audit_answers "  # noqa: S608 - constant
            "ORDER BY ts DESC, {seq} DESC LIMIT ?",
            (self.dialect.limit(limit),),
        )
        return [answer_from_row(r) for r in rows]


class SqliteAuditLog(SqliteTables, AuditTables):
    """Audit and miss log in a SQLite file (``sqlite:///`` URL, usually the store's)."""

    def __init__(self, url: str) -> None:
        super().__init__(connect(url, _SCHEMA))
        # WAL with NORMAL sync survives a crash of the process, not of the machine: the same
        # promise the batched writer makes (events still queued in memory die with the process).
        self._db.execute("PRAGMA synchronous=NORMAL")

    def record(self, events: Sequence[AuditEvent]) -> None:
        """Append a batch of answers (SAFE ones also to the miss log) in one transaction."""
        if not events:
            return
        with self._transaction():
            self._db.executemany(
                f"INSERT INTO audit_answers ({ANSWER_COLUMNS}) "  # noqa: S608 - constant
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                [answer_row(e) for e in events],
            )
            self._db.executemany(
                f"INSERT INTO audit_misses ({MISS_COLUMNS}) "  # noqa: S608 - constant
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                [miss_row(e) for e in events if e.layer == "SAFE"],
            )

    def misses(
        self, *, tenant: str | None = None, since: float = 0.0, limit: int = 50
    ) -> list[MissSummary]:
        """The most frequent misses (optionally of one tenant), most frequent first."""
        rows = self._all(
            "SELECT normalized, MIN(question), COUNT(*), MAX(ts), "
            "GROUP_CONCAT(DISTINCT COALESCE(tenant, '')), "
            "(SELECT best_guess FROM audit_misses m2 WHERE m2.normalized = m.normalized "
            " ORDER BY ts DESC LIMIT 1), MAX(best_score) "
            "FROM audit_misses m WHERE ts >= ? AND (? IS NULL OR tenant = ?) GROUP BY normalized "
            "ORDER BY COUNT(*) DESC, MAX(ts) DESC LIMIT ?",
            (since, tenant, tenant, limit),
        )
        return [miss_from_row(r, [t for t in str(r[4] or "").split(",") if t]) for r in rows]
