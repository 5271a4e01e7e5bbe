"""Fixtures of the integration tests: throwaway Postgres databases on the real server."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import psycopg
import pytest
from psycopg import sql

from stores.postgres import Pool, migrate, open_pool, redact

ADMIN_DSN = os.environ.get(
    "RAGC_TEST_PG_DSN", "host=127.0.0.1 port=5432 dbname=test user=postgres connect_timeout=3"
)


@pytest.fixture(scope="session")
def admin_dsn() -> str:
    """The server's DSN, or a skip (a failure under CI=true) when it does not answer."""
    try:
        psycopg.connect(ADMIN_DSN, autocommit=True).close()
    except psycopg.OperationalError as exc:
        why = " ".join(str(exc).split())
        reason = f"PostgreSQL is not reachable at {redact(ADMIN_DSN)}: {why}"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(reason)
        pytest.skip(reason + " (set RAGC_TEST_PG_DSN, or start it: pg_ctlcluster 15 main start)")
    return ADMIN_DSN


@pytest.fixture
def blank_dsn(admin_dsn: str) -> Iterator[str]:
    """A DSN of a fresh, empty database of its own, dropped after the test."""
    name = f"ragc_test_{uuid.uuid4().hex[:16]}"
    with psycopg.connect(admin_dsn, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield psycopg.conninfo.make_conninfo(admin_dsn, dbname=name)
    finally:
        with psycopg.connect(admin_dsn, autocommit=True) as admin:
            admin.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


@pytest.fixture
def dsn(blank_dsn: str) -> str:
    """A DSN of a fresh database migrated to the newest revision."""
    migrate(blank_dsn)
    return blank_dsn


@pytest.fixture
def pool(dsn: str) -> Iterator[Pool]:
    opened = open_pool(dsn)
    yield opened
    opened.close()
