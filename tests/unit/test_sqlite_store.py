"""What only the SQLite backend promises: immutability even against direct SQL, clear errors."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from schemas.errors import StoreConfigError
from stores import SqliteStore, open_store
from tests.factories import make_snapshot


def test_published_rows_cannot_be_changed_even_with_sql(tmp_path: Path) -> None:
    path = tmp_path / "k.db"
    store = SqliteStore(f"sqlite:///{path}")
    store.publish(make_snapshot("v1"), activate=True)
    store.close()

    db = sqlite3.connect(path)
    with pytest.raises(sqlite3.IntegrityError, match="immutable"):
        db.execute("UPDATE entries SET payload = x'00' WHERE version = 'v1'")
    with pytest.raises(sqlite3.IntegrityError, match="immutable"):
        db.execute(
            "INSERT INTO entries (key, version, kind, payload) "
            "VALUES ('knowledge:v1:en:exact:x', 'v1', 'exact', x'00')"
        )
    with pytest.raises(sqlite3.IntegrityError, match="immutable"):
        db.execute("UPDATE versions SET manifest = x'00' WHERE version = 'v1'")
    db.close()


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("mysql://localhost/x", "unknown store URL scheme 'mysql'"),
        ("knowledge.db", "unknown store URL scheme"),
        ("sqlite:///", "names no file"),
    ],
)
def test_unusable_store_urls_are_named(url: str, message: str) -> None:
    with pytest.raises(StoreConfigError, match=message):
        open_store(url)


def test_a_file_that_is_not_a_database_is_refused(tmp_path: Path) -> None:
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StoreConfigError, match="cannot open SQLite store"):
        open_store(f"sqlite:///{junk}")
