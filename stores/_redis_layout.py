"""Where :class:`stores.redis.RedisStore` keeps things: its key names, a version rebuilt from
its rows, and a version's namespace removed without blocking the server."""

from __future__ import annotations

from collections.abc import Sequence

import redis

from schemas.errors import CorruptSnapshotError
from schemas.keys import PREFIX, key_kind, pin_key, version_prefix
from schemas.manifest import Snapshot
from stores._redis_connection import text
from stores.base import MANIFEST, assemble_snapshot

__all__ = ["Keys", "assemble", "unlink_namespace"]


class Keys:
    """Every Redis key name the store uses, with the optional prefix applied."""

    def __init__(self, prefix: str) -> None:
        self.p = f"{prefix}:" if prefix else ""
        g = f"{self.p}{PREFIX}:"
        self.versions, self.states, self.started = f"{g}versions", f"{g}states", f"{g}started"
        self.seq, self.pins, self.history = f"{g}seq", f"{g}pins", f"{g}history"
        self.rollout, self.active, self.channel = f"{g}rollout", f"{g}active", f"{g}pointer"
        self.pointer_keys = [self.states, self.rollout, self.active, self.history]

    def ns(self, version: str) -> str:
        """The version's namespace: its rows and its ``_index``/``_manifest``/... keys."""
        return self.p + version_prefix(version)

    def row(self, key: str) -> str:
        return self.p + key

    def pin(self, tenant: str) -> str:
        return self.p + pin_key(tenant)


def assemble(
    version: str,
    rows: Sequence[tuple[str, bytes | None]],
    manifest: bytes,
    fallbacks: bytes,
    blobs: dict[bytes, bytes],
) -> Snapshot:
    """A snapshot rebuilt from its ``(key, payload)`` rows in order, verified."""
    records: list[tuple[str, bytes]] = []
    for key, payload in rows:
        kind = key_kind(key)
        if payload is None or kind is None:
            raise CorruptSnapshotError(
                f"version {version!r}: row {key!r} is missing or misnamed",
                hint="the version was modified in Redis; publish it again as a new version",
            )
        records.append((kind, payload))
    return assemble_snapshot(
        MANIFEST.decode(manifest),
        records,
        fallbacks,
        {text(name): bytes(data) for name, data in blobs.items()},
    )


def unlink_namespace(client: redis.Redis, namespace: str, *, batch: int) -> int:
    """UNLINK every key starting with ``namespace`` (SCAN MATCH, never KEYS); the count.

    ``knowledge:pin:tenant_*`` keys are pins, never rows of a version labelled ``pin``, so a
    ``tenant_`` right after the namespace is skipped.
    """
    prefix = namespace.encode()
    found: list[bytes] = []
    removed = 0
    for key in client.scan_iter(match=prefix + b"*", count=batch):
        if not key[len(prefix) :].startswith(b"tenant_"):
            found.append(key)
        if len(found) >= batch:
            removed += int(client.unlink(*found))
            found.clear()
    if found:
        removed += int(client.unlink(*found))
    return removed
