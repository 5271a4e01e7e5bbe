"""The compile's content-addressed build cache: one SQLite file of ``(namespace, key) -> bytes``.

Keys are content hashes (document bytes, prompt + context + model), so an entry never goes
stale: changed input means a different key. It lets a recompile reuse parses, embeddings and
provider calls for everything that did not change.
"""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

__all__ = ["BuildCache"]


class BuildCache:
    """A persistent key-value cache for compile stages (safe across threads)."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(
            self.path, timeout=30.0, isolation_level=None, check_same_thread=False
        )
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS cache (namespace TEXT NOT NULL, key TEXT NOT NULL, "
            "value BLOB NOT NULL, PRIMARY KEY (namespace, key)) WITHOUT ROWID"
        )
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def get(self, namespace: str, key: str) -> bytes | None:
        with self._lock:
            row = self._db.execute(
                "SELECT value FROM cache WHERE namespace = ? AND key = ?", (namespace, key)
            ).fetchone()
        if row is None:
            self.misses += 1
            return None
        self.hits += 1
        return bytes(row[0])

    def get_many(self, namespace: str, keys: list[str]) -> dict[str, bytes]:
        found: dict[str, bytes] = {}
        with self._lock:
            for start in range(0, len(keys), 500):
                part = keys[start : start + 500]
                marks = ",".join("?" * len(part))
                rows = self._db.execute(
                    f"SELECT key, value FROM cache WHERE namespace = ? AND key IN ({marks})",  # noqa: S608
                    (namespace, *part),
                ).fetchall()
                found.update({str(k): bytes(v) for k, v in rows})
        self.hits += len(found)
        self.misses += len(set(keys)) - len(found)
        return found

    def put(self, namespace: str, key: str, value: bytes) -> None:
        self.put_many(namespace, {key: value})

    def put_many(self, namespace: str, values: dict[str, bytes]) -> None:
        with self._lock:
            self._db.execute("BEGIN")
            self._db.executemany(
                "INSERT OR REPLACE INTO cache (namespace, key, value) VALUES (?, ?, ?)",
                [(namespace, k, v) for k, v in values.items()],
            )
            self._db.execute("COMMIT")

    def close(self) -> None:
        with self._lock:
            self._db.close()
