"""The embedded snapshot store: one SQLite file, no server.

Publishing writes the version in three steps: a ``loading`` row, the records in batches, then
one transaction that checks the row count, marks the version ``ready`` and (when asked) flips
the pointer. Readers only ever see ``ready`` versions, so a publisher that dies mid-load leaves
the active version serving and a partial namespace that :meth:`SqliteStore.gc` collects.
Triggers make published rows read-only, so immutability holds even against direct SQL.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Final

import msgspec

from schemas.errors import (
    CorruptSnapshotError,
    ImmutableVersionError,
    PermanentError,
    StoreConfigError,
    StoreUnavailableError,
    VersionNotFoundError,
)
from schemas.keys import validate_tenant, validate_version
from schemas.manifest import Manifest, Snapshot
from schemas.records import ExactAnswer, IntentTemplate, TopicBlock
from schemas.rollout import PointerState, RolloutRecord, VersionInfo, with_canary
from stores.base import (
    EXACT,
    INTENT,
    MANIFEST,
    PARTIAL_GRACE_S,
    PARTIAL_HINT,
    ROLLOUT,
    TOPIC,
    GcReport,
    assemble_snapshot,
    check_percent,
    now_iso,
    plan_gc,
    rollback_target,
    version_info,
)

__all__ = ["SqliteStore", "connect", "path_from_url"]

_BATCH: Final = 500
_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS versions (
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,
    version    TEXT NOT NULL UNIQUE,
    state      TEXT NOT NULL CHECK (state IN ('loading', 'ready')),
    started_at REAL NOT NULL,  -- the load's heartbeat: refreshed with every batch written
    manifest   BLOB NOT NULL,
    fallbacks  BLOB NOT NULL,
    expected   INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS entries (
    key     TEXT PRIMARY KEY,
    version TEXT NOT NULL,
    kind    TEXT NOT NULL CHECK (kind IN ('exact', 'intent', 'topic')),
    payload BLOB NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS entries_by_version ON entries (version, kind);
CREATE TABLE IF NOT EXISTS blobs (
    version TEXT NOT NULL,
    name    TEXT NOT NULL,
    data    BLOB NOT NULL,
    PRIMARY KEY (version, name)
);
CREATE TABLE IF NOT EXISTS pointers (name TEXT PRIMARY KEY, value BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS pins (tenant TEXT PRIMARY KEY, version TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS history (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, version TEXT NOT NULL, at TEXT NOT NULL
);
CREATE TRIGGER IF NOT EXISTS entries_insert_only_while_loading BEFORE INSERT ON entries
WHEN (SELECT state FROM versions WHERE version = NEW.version) IS NOT 'loading'
BEGIN SELECT RAISE(ABORT, 'immutable version'); END;
CREATE TRIGGER IF NOT EXISTS entries_never_update BEFORE UPDATE ON entries
BEGIN SELECT RAISE(ABORT, 'immutable version'); END;
CREATE TRIGGER IF NOT EXISTS blobs_insert_only_while_loading BEFORE INSERT ON blobs
WHEN (SELECT state FROM versions WHERE version = NEW.version) IS NOT 'loading'
BEGIN SELECT RAISE(ABORT, 'immutable version'); END;
CREATE TRIGGER IF NOT EXISTS blobs_never_update BEFORE UPDATE ON blobs
BEGIN SELECT RAISE(ABORT, 'immutable version'); END;
CREATE TRIGGER IF NOT EXISTS versions_ready_is_final BEFORE UPDATE ON versions
WHEN OLD.state = 'ready'
BEGIN SELECT RAISE(ABORT, 'immutable version'); END;
"""


def path_from_url(url: str) -> str:
    """The file path of a ``sqlite:///path`` URL (``sqlite:///:memory:`` for memory)."""
    if not url.startswith("sqlite:///"):
        raise StoreConfigError(
            f"store URL {url!r} is not a SQLite URL",
            hint="write sqlite:///relative/path.db or sqlite:////absolute/path.db",
        )
    path = url.removeprefix("sqlite:///")
    if not path:
        raise StoreConfigError(f"store URL {url!r} names no file", hint="sqlite:///path.db")
    return path


def connect(url: str, schema: str = "") -> sqlite3.Connection:
    """A connection to the SQLite file of a ``sqlite:///`` URL, shared by the embedded stores:
    autocommit (transactions are explicit), WAL so readers never block the writer, usable
    from several threads (each class serializes its own use), ``schema`` applied."""
    path = path_from_url(url)
    if path != ":memory:":
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(path, timeout=10.0, isolation_level=None, check_same_thread=False)
    db.execute("PRAGMA journal_mode=WAL")
    if schema:
        db.executescript(schema)
    return db


def _delete(db: sqlite3.Connection, version: str) -> None:
    """Every row of ``version`` (inside the caller's transaction)."""
    db.execute("DELETE FROM entries WHERE version = ?", (version,))
    db.execute("DELETE FROM blobs WHERE version = ?", (version,))
    db.execute("DELETE FROM history WHERE version = ?", (version,))
    db.execute("DELETE FROM versions WHERE version = ?", (version,))


class SqliteStore:
    """:class:`stores.base.SnapshotStore` on one SQLite file."""

    def __init__(self, url: str) -> None:
        self.url = url
        path = path_from_url(url)
        if path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        try:
            self._db = sqlite3.connect(
                path, timeout=10.0, isolation_level=None, check_same_thread=False
            )
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute("PRAGMA foreign_keys=ON")
            self._db.executescript(_SCHEMA)
        except sqlite3.DatabaseError as exc:
            raise StoreConfigError(
                f"cannot open SQLite store {path!r}: {exc}",
                hint="check the path is writable and is a ragc store (or a new file)",
            ) from exc
        self._lock = threading.RLock()

    # -- plumbing -----------------------------------------------------------------------

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        """One write transaction, serialized across threads and processes."""
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
            except sqlite3.OperationalError as exc:
                raise StoreUnavailableError(f"SQLite store is busy: {exc}") from exc
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def _rows(self, sql: str, *args: object) -> list[tuple[Any, ...]]:
        with self._lock:
            try:
                return self._db.execute(sql, args).fetchall()
            except sqlite3.OperationalError as exc:
                raise StoreUnavailableError(f"SQLite store read failed: {exc}") from exc

    def _state(self, version: str) -> str | None:
        rows = self._rows("SELECT state FROM versions WHERE version = ?", version)
        return str(rows[0][0]) if rows else None

    def _require_ready(self, version: str) -> None:
        validate_version(version)
        if self._state(version) != "ready":
            raise VersionNotFoundError(version)

    def _rollout_record(self) -> RolloutRecord:
        rows = self._rows("SELECT value FROM pointers WHERE name = 'rollout'")
        return ROLLOUT.decode(rows[0][0]) if rows else RolloutRecord()

    def _write_rollout(self, db: sqlite3.Connection, record: RolloutRecord) -> RolloutRecord:
        record = msgspec.structs.replace(record, updated_at=now_iso())
        db.execute(
            "INSERT INTO pointers (name, value) VALUES ('rollout', ?) "
            "ON CONFLICT (name) DO UPDATE SET value = excluded.value",
            (msgspec.json.encode(record),),
        )
        return record

    def _promote(self, db: sqlite3.Connection, version: str) -> RolloutRecord:
        db.execute("INSERT INTO history (version, at) VALUES (?, ?)", (version, now_iso()))
        return self._write_rollout(db, RolloutRecord(stable=version))

    # -- publishing ---------------------------------------------------------------------

    def next_version(self) -> str:
        rows = self._rows("SELECT COALESCE(MAX(seq), 0) FROM versions")
        n = int(rows[0][0]) + 1
        while self._state(f"v{n}") is not None:
            n += 1
        return f"v{n}"

    def publish(self, snapshot: Snapshot, *, activate: bool = False) -> VersionInfo:
        snapshot.verify()
        rows = list(snapshot.keyed())
        self._reserve(snapshot, len(rows))
        try:
            self._load(snapshot, rows)
            self._seal(snapshot.version, len(rows), activate=activate)
        except BaseException:
            # A publisher that fails removes its own partial load (one that is killed leaves
            # it to `gc`, once its heartbeat is old); the active version is untouched.
            with contextlib.suppress(Exception):
                self._abandon(snapshot.version)
            raise
        return self._info(snapshot.version)

    def _abandon(self, version: str) -> None:
        """Delete a load that is still ``loading`` (nothing else), in one transaction."""
        with self._tx() as db:
            found = db.execute(
                "SELECT state FROM versions WHERE version = ?", (version,)
            ).fetchone()
            if found is not None and found[0] == "loading":
                _delete(db, version)

    def _reserve(self, snapshot: Snapshot, expected: int) -> None:
        """Record ``snapshot``'s version as ``loading`` (refused if the label is taken)."""
        version = snapshot.version
        with self._tx() as db:
            found = db.execute(
                "SELECT state FROM versions WHERE version = ?", (version,)
            ).fetchone()
            if found and found[0] == "ready":
                raise ImmutableVersionError(version)
            if found:
                raise PermanentError(
                    f"a partial load of version {version!r} is in the store", hint=PARTIAL_HINT
                )
            db.execute(
                "INSERT INTO versions (version, state, started_at, manifest, fallbacks, expected)"
                " VALUES (?, 'loading', ?, ?, ?, ?)",
                (
                    version,
                    time.time(),
                    msgspec.json.encode(snapshot.manifest),
                    msgspec.json.encode(snapshot.fallbacks),
                    expected,
                ),
            )

    def _load(self, snapshot: Snapshot, rows: list[tuple[str, str, bytes]]) -> None:
        """Write every row of ``snapshot`` under its ``loading`` version."""
        version = snapshot.version
        for start in range(0, len(rows), _BATCH):
            with self._tx() as db:
                db.executemany(
                    "INSERT INTO entries (kind, key, payload, version) VALUES (?, ?, ?, ?)",
                    [
                        (kind, key, data, version)
                        for kind, key, data in rows[start : start + _BATCH]
                    ],
                )
                # The heartbeat: a load whose publisher stops writing is collectable.
                db.execute(
                    "UPDATE versions SET started_at = ? WHERE version = ? AND state = 'loading'",
                    (time.time(), version),
                )
        with self._tx() as db:
            db.executemany(
                "INSERT INTO blobs (version, name, data) VALUES (?, ?, ?)",
                [(version, name, data) for name, data in snapshot.blobs.items()],
            )

    def _seal(self, version: str, expected: int, *, activate: bool) -> None:
        """Check the load is whole, mark it ready and flip the pointer: one transaction."""
        with self._tx() as db:
            (written,) = db.execute(
                "SELECT COUNT(*) FROM entries WHERE version = ?", (version,)
            ).fetchone()
            if written != expected:
                raise CorruptSnapshotError(
                    f"version {version!r}: {written} rows written, {expected} expected",
                    hint="the load was interrupted and has been removed; publish again",
                )
            db.execute("UPDATE versions SET state = 'ready' WHERE version = ?", (version,))
            if activate:
                self._promote(db, version)

    # -- pointers -----------------------------------------------------------------------

    def activate(self, version: str) -> RolloutRecord:
        self._require_ready(version)
        with self._tx() as db:
            return self._promote(db, version)

    def rollout(self, version: str, percent: float) -> RolloutRecord:
        percent = check_percent(percent)
        self._require_ready(version)
        if percent >= 100.0:
            return self.activate(version)
        with self._tx() as db:
            current = self._rollout_record()
            if current.stable is None:
                raise PermanentError(
                    "no stable version to run a canary against",
                    hint=f"activate a version first: `ragc rollout {version} --percent 100`",
                )
            return self._write_rollout(db, with_canary(current, version, percent))

    def rollback(self) -> RolloutRecord:
        with self._tx() as db:
            current = self._rollout_record()
            if current.canary is not None:
                return self._write_rollout(db, RolloutRecord(stable=current.stable))
            history = [str(r[0]) for r in db.execute("SELECT version FROM history ORDER BY seq")]
            ready = {
                str(r[0]) for r in db.execute("SELECT version FROM versions WHERE state = 'ready'")
            }
            target = rollback_target(current, history, ready)
            # Pop the history back to the target so a second rollback goes further back.
            (top,) = db.execute(
                "SELECT MAX(seq) FROM history WHERE version = ?", (target,)
            ).fetchone()
            db.execute("DELETE FROM history WHERE seq > ?", (top,))
            return self._write_rollout(db, RolloutRecord(stable=target))

    def pin(self, tenant: str, version: str | None) -> None:
        validate_tenant(tenant)
        if version is None:
            with self._tx() as db:
                db.execute("DELETE FROM pins WHERE tenant = ?", (tenant,))
            return
        self._require_ready(version)
        with self._tx() as db:
            db.execute(
                "INSERT INTO pins (tenant, version) VALUES (?, ?) "
                "ON CONFLICT (tenant) DO UPDATE SET version = excluded.version",
                (tenant, version),
            )

    def pointers(self) -> PointerState:
        with self._lock:
            self._db.execute("BEGIN")
            try:
                rollout = self._rollout_record()
                pins = {
                    str(t): str(v) for t, v in self._db.execute("SELECT tenant, version FROM pins")
                }
            finally:
                self._db.execute("COMMIT")
        return PointerState(rollout=rollout, pins=pins)

    def active_version(self) -> str | None:
        return self._rollout_record().stable

    # -- reading ------------------------------------------------------------------------

    def _info(self, version: str, state: PointerState | None = None) -> VersionInfo:
        return version_info(version, self.manifest(version), state or self.pointers())

    def versions(self) -> list[VersionInfo]:
        state = self.pointers()
        rows = self._rows("SELECT version FROM versions WHERE state = 'ready' ORDER BY seq")
        return [self._info(str(r[0]), state) for r in rows]

    def manifest(self, version: str) -> Manifest:
        validate_version(version)
        rows = self._rows(
            "SELECT manifest FROM versions WHERE version = ? AND state = 'ready'", version
        )
        if not rows:
            raise VersionNotFoundError(version)
        return MANIFEST.decode(rows[0][0])

    def load(self, version: str) -> Snapshot:
        manifest = self.manifest(version)
        (fallbacks_json,) = self._rows("SELECT fallbacks FROM versions WHERE version = ?", version)[
            0
        ]
        rows = self._rows(
            "SELECT kind, payload FROM entries WHERE version = ? ORDER BY key", version
        )
        blobs = {
            str(name): bytes(data)
            for name, data in self._rows("SELECT name, data FROM blobs WHERE version = ?", version)
        }
        return assemble_snapshot(
            manifest, ((str(k), bytes(p)) for k, p in rows), fallbacks_json, blobs
        )

    def _payload(self, key: str, kind: str) -> bytes | None:
        rows = self._rows(
            "SELECT e.payload FROM entries e JOIN versions v ON v.version = e.version "
            "WHERE e.key = ? AND e.kind = ? AND v.state = 'ready'",
            key,
            kind,
        )
        return bytes(rows[0][0]) if rows else None

    def exact(self, key: str) -> ExactAnswer | None:
        payload = self._payload(key, "exact")
        return EXACT.decode(payload) if payload is not None else None

    def intent(self, key: str) -> IntentTemplate | None:
        payload = self._payload(key, "intent")
        return INTENT.decode(payload) if payload is not None else None

    def topic(self, key: str) -> TopicBlock | None:
        payload = self._payload(key, "topic")
        return TOPIC.decode(payload) if payload is not None else None

    # -- collection ---------------------------------------------------------------------

    def gc(self, keep: int, *, partial_grace_s: float = PARTIAL_GRACE_S) -> GcReport:
        state = self.pointers()
        protected = state.in_use
        ready = [
            str(r[0])
            for r in self._rows("SELECT version FROM versions WHERE state = 'ready' ORDER BY seq")
        ]
        removed, kept = plan_gc(ready, keep, protected)
        cutoff = time.time() - partial_grace_s
        partial = tuple(
            str(r[0])
            for r in self._rows(
                "SELECT version FROM versions WHERE state = 'loading' AND started_at <= ?", cutoff
            )
        )
        for version in (*removed, *partial):
            with self._tx() as db:
                _delete(db, version)
        return GcReport(removed=removed, kept=kept, partial_removed=partial)

    def close(self) -> None:
        with self._lock:
            self._db.close()
