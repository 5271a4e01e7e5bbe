"""Where the warm tier's components live, decided in one place (Postgres in tests/integration)."""

from __future__ import annotations

from pathlib import Path

import pytest

from schemas.errors import StoreConfigError, StoreUnavailableError
from stores.audit import SqliteAuditLog
from stores.ledger import SqliteChangeLedger
from stores.review import SqliteReviewQueue
from stores.warm import WarmTier
from tests.factories import make_snapshot


def test_a_sqlite_store_keeps_them_in_its_file(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'store.db'}"
    warm = WarmTier(url)
    log, queue, ledger = warm.audit_log(), warm.review_queue(), warm.ledger()
    try:
        assert isinstance(log, SqliteAuditLog)
        assert isinstance(queue, SqliteReviewQueue)
        assert isinstance(ledger, SqliteChangeLedger)
        assert (warm.embedded, warm.postgres) == (True, False)
    finally:
        for opened in (log, queue, ledger):
            if opened is not None:
                opened.close()
    assert (tmp_path / "store.db").is_file()
    assert not warm.record_catalogue(make_snapshot("v1"))


def test_a_redis_store_without_postgres_has_none_and_says_what_to_set() -> None:
    warm = WarmTier("redis://127.0.0.1:6379/0")
    assert (warm.audit_log(), warm.review_queue(), warm.ledger()) == (None, None, None)
    with pytest.raises(StoreConfigError, match="the review queue needs a warm tier") as raised:
        warm.require(warm.review_queue(), "the review queue")
    assert "RAGC_WARM_DSN" in (raised.value.hint or "")


def test_a_dsn_moves_them_to_postgres_whatever_the_store(tmp_path: Path) -> None:
    warm = WarmTier(f"sqlite:///{tmp_path / 'store.db'}", "postgresql://127.0.0.1:1/none")
    assert (warm.postgres, warm.embedded) == (True, False)
    with pytest.raises(StoreUnavailableError):  # the server is tried, not the SQLite file
        warm.audit_log()
    assert not (tmp_path / "store.db").exists()
