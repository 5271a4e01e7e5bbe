"""Snapshot stores: the contract between compile time and serve time, and its backends."""

from __future__ import annotations

from schemas.errors import StoreConfigError
from schemas.settings import DEFAULT_STORE_URL
from stores.base import GcReport, SnapshotStore, plan_gc, rollback_target
from stores.files import read_snapshot, write_snapshot
from stores.redis import RedisStore
from stores.sqlite import SqliteStore

__all__ = [
    "DEFAULT_STORE_URL",
    "GcReport",
    "RedisStore",
    "SnapshotStore",
    "SqliteStore",
    "open_store",
    "plan_gc",
    "read_snapshot",
    "rollback_target",
    "store_scheme",
    "write_snapshot",
]


def store_scheme(url: str) -> str:
    """The store URL's scheme (``sqlite``, ``redis`` or ``rediss``); raises
    :class:`StoreConfigError` for any other, before anything is opened."""
    scheme = url.split("://", 1)[0].lower() if "://" in url else ""
    if scheme not in {"sqlite", "redis", "rediss"}:
        raise StoreConfigError(
            f"unknown store URL scheme {scheme or url!r} in {url!r}",
            hint="use sqlite:///path/to/knowledge.db or redis[s]://host:6379/0[?prefix=name]",
        )
    return scheme


def open_store(url: str) -> SnapshotStore:
    """Open the store a URL names. The caller owns it and closes it."""
    if store_scheme(url) == "sqlite":
        return SqliteStore(url)
    return RedisStore(url)
