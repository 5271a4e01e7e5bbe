"""Shared fixtures: stores of every backend, one Prefect test harness, the compiled examples."""

from __future__ import annotations

import functools
import os
import socket
import tempfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"

# Prefect and friends stay offline, quiet and out of the developer's home during tests; each
# pytest-xdist worker gets a Prefect home of its own.
_WORKER = os.environ.get("PYTEST_XDIST_WORKER")
if _WORKER:
    os.environ["PREFECT_HOME"] = tempfile.mkdtemp(prefix=f"ragc-prefect-home-{_WORKER}-")
else:
    os.environ.setdefault("PREFECT_HOME", tempfile.mkdtemp(prefix="ragc-prefect-home-"))
# xdist workers start with COLUMNS=80, which rich reads once, when a console is made: without
# it the CLI's consoles follow COLUMNS at print time, as they do in one process.
os.environ.pop("COLUMNS", None)
os.environ.pop("LINES", None)
for _name, _value in (
    ("PREFECT_SERVER_ANALYTICS_ENABLED", "false"),
    ("DO_NOT_TRACK", "1"),
    ("PREFECT_LOGGING_LEVEL", "WARNING"),
    ("UNSTRUCTURED_DISABLE_NOTICE", "1"),
    ("TQDM_DISABLE", "1"),
    ("GX_ANALYTICS_ENABLED", "false"),
):
    os.environ.setdefault(_name, _value)

from stores import SnapshotStore, open_store  # noqa: E402


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'knowledge.db'}"


REDIS_URL = os.environ.get("RAGC_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
"""The Redis server the ``redis`` backend tests use; each test gets its own key prefix."""


def _redis_url(tmp_path: Path) -> str:
    return f"{REDIS_URL}?prefix=test-{uuid.uuid4().hex}"


STORE_URLS: dict[str, Callable[[Path], str]] = {"sqlite": _sqlite_url, "redis": _redis_url}
_SERVER_BACKENDS = frozenset({"redis"})
"""Backends that need a running server: marked ``integration``, skipped when it is down."""


@functools.cache
def redis_unavailable() -> str | None:
    """Why the test Redis cannot be used, or ``None`` when it answers."""
    import redis  # noqa: PLC0415

    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1, socket_timeout=2)
    try:
        client.ping()
    except redis.exceptions.RedisError as exc:
        return (
            f"no Redis at {REDIS_URL} ({exc}); start one with `redis-server --port 6379` "
            "or set RAGC_TEST_REDIS_URL"
        )
    finally:
        client.close()
    return None


def require_redis() -> None:
    """Skip the calling test when Redis is down, except on CI (``CI=true``), where it fails."""
    reason = redis_unavailable()
    if reason is None:
        return
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"Redis is required on CI: {reason}")
    pytest.skip(reason)


def drop_redis_prefix(url: str) -> None:
    """Delete every key under the ``?prefix=`` of a test Redis URL (SCAN + UNLINK)."""
    import redis  # noqa: PLC0415

    from stores.redis import parse_redis_url  # noqa: PLC0415

    client_url, prefix = parse_redis_url(url)
    assert prefix, "refusing to clean a Redis URL without a test prefix"
    client = redis.Redis.from_url(client_url)
    try:
        batch = list(client.scan_iter(match=f"{prefix}:*", count=1000))
        for start in range(0, len(batch), 1000):
            client.unlink(*batch[start : start + 1000])
    finally:
        client.close()


@pytest.fixture(
    params=[
        pytest.param(name, marks=pytest.mark.integration) if name in _SERVER_BACKENDS else name
        for name in sorted(STORE_URLS)
    ]
)
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A URL of a fresh, empty store, once per backend."""
    if request.param == "redis":
        require_redis()
    url = STORE_URLS[request.param](tmp_path)
    yield url
    if request.param == "redis":
        drop_redis_prefix(url)


@pytest.fixture
def store(store_url: str) -> Iterator[SnapshotStore]:
    """A fresh, empty store, once per backend."""
    opened = open_store(store_url)
    yield opened
    opened.close()


@pytest.fixture(scope="session")
def prefect_harness() -> Iterator[None]:
    """One temporary Prefect API for the whole test session."""
    from prefect.testing.utilities import prefect_test_harness  # noqa: PLC0415

    with prefect_test_harness(server_startup_timeout=120):
        yield
