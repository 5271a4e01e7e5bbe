"""Shared fixtures: stores of every backend, CLI runner helpers."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from stores import SnapshotStore, open_store


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
