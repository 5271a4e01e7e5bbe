"""Shared fixtures: stores of every backend, one Prefect test harness, the compiled examples."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"

# Prefect and friends stay offline, quiet and out of the developer's home during tests.
os.environ.setdefault("PREFECT_HOME", tempfile.mkdtemp(prefix="ragc-prefect-home-"))
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


def _sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'knowledge.db'}"


STORE_URLS: dict[str, Callable[[Path], str]] = {"sqlite": _sqlite_url}


@pytest.fixture(params=sorted(STORE_URLS))
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A URL of a fresh, empty store, once per backend."""
    return STORE_URLS[request.param](tmp_path)


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
