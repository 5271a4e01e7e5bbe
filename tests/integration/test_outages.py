"""Servers that go away and come back: a Postgres warm tier of its own, stopped and started.

Slow (a cluster is created for the test); the machine's shared servers are never touched.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from bench._backends import PostgresServer, wait_for
from schemas.errors import RagcError, StoreUnavailableError
from serving.audit import AuditWriter
from stores._pg import WarmPool
from stores.audit import AuditEvent
from stores.postgres import PostgresAuditLog, migrate, open_pool

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture
def postgres() -> Iterator[PostgresServer]:
    server = PostgresServer()
    try:
        server.start()
        migrate(server.dsn)
        yield server
    finally:
        server.close()


def _event(question: str) -> AuditEvent:
    return AuditEvent(
        ts=time.time(),
        tenant=None,
        version="v1",
        layer="SAFE",
        cache_key=None,
        entry_id=None,
        latency_ms=1.0,
        question=question,
        normalized=question,
        confidence=0.1,
    )


def test_a_stopped_warm_tier_fails_fast_and_is_used_again_once_it_returns(
    postgres: PostgresServer,
) -> None:
    pool = open_pool(postgres.dsn)
    assert isinstance(pool, WarmPool)
    pool.breaker.hold = 3600.0  # the test decides when the next call may try
    log = PostgresAuditLog(postgres.dsn, pool=pool)
    writer = AuditWriter(log, interval=0.05)
    try:
        writer.record(_event("before"))
        assert writer.flush() == 1
        postgres.stop()

        with pytest.raises(StoreUnavailableError, match="warm tier") as first:
            log.misses()
        assert "failing fast" not in first.value.message
        with pytest.raises(StoreUnavailableError, match="failing fast"):
            log.misses()  # at once: no second wait for a connection
        writer.record(_event("during"))  # queued, never blocks

        postgres.start()
        pool.breaker.hold = 0.0

        def written() -> bool:
            try:
                return {"before", "during"} <= {m.normalized for m in log.misses()}
            except RagcError:
                return False

        wait_for(written, timeout=120, what="the audit writer resuming")
        assert writer.dropped == 0
    finally:
        writer.close()
        log.close()
        pool.close()
