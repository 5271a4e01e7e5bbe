"""The snapshot-store protocol every backend implements, and the pointer rules they share.

A store keeps whole versions side by side and a few small pointers: the rollout record (stable
version, canary version, canary percent), per-tenant pins and the activation history used by
rollback. Publishing is atomic (a version is invisible until complete) and versions are
immutable. The pure functions at the bottom decide rollback targets and what GC may delete, so
every backend behaves the same.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import msgspec

from schemas.errors import InvalidInputError, PermanentError
from schemas.manifest import Manifest, Snapshot
from schemas.records import ExactAnswer, IntentTemplate, TopicBlock
from schemas.rollout import PointerState, RolloutRecord, VersionInfo

__all__ = [
    "GcReport",
    "SnapshotStore",
    "check_percent",
    "plan_gc",
    "rollback_target",
]


class GcReport(msgspec.Struct, frozen=True, kw_only=True):
    """What a garbage collection removed and kept."""

    removed: tuple[str, ...]
    kept: tuple[str, ...]
    partial_removed: tuple[str, ...] = ()
    """Half-loaded versions left by a publisher that died before finishing."""


@runtime_checkable
class SnapshotStore(Protocol):
    """Versioned snapshots plus the active-version pointers."""

    url: str

    def publish(self, snapshot: Snapshot, *, activate: bool = False) -> VersionInfo:
        """Write a whole sealed snapshot as a new version; flip the pointer if ``activate``."""
        ...

    def next_version(self) -> str:
        """A fresh version label (``v{n}``) that no published or partial version uses."""
        ...

    def activate(self, version: str) -> RolloutRecord:
        """Make ``version`` the stable version for everyone not pinned; ends any canary."""
        ...

    def rollout(self, version: str, percent: float) -> RolloutRecord:
        """Serve ``version`` to ``percent`` % of sessions (100 promotes it to stable)."""
        ...

    def rollback(self) -> RolloutRecord:
        """End a running canary, or else return to the previously active version."""
        ...

    def pin(self, tenant: str, version: str | None) -> None:
        """Pin ``tenant`` to ``version``; ``None`` removes the pin."""
        ...

    def pointers(self) -> PointerState:
        """The rollout record and every tenant pin, read together."""
        ...

    def active_version(self) -> str | None:
        """The stable version, or ``None`` before the first activation."""
        ...

    def versions(self) -> list[VersionInfo]:
        """Published (complete) versions, oldest first; partial loads are never listed."""
        ...

    def manifest(self, version: str) -> Manifest:
        """The manifest of a published version."""
        ...

    def load(self, version: str) -> Snapshot:
        """A whole published version, verified against its manifest."""
        ...

    def exact(self, key: str) -> ExactAnswer | None:
        """The L1 record under ``key`` (from :func:`schemas.keys.exact_key`)."""
        ...

    def intent(self, key: str) -> IntentTemplate | None:
        """The L2 record under ``key``."""
        ...

    def topic(self, key: str) -> TopicBlock | None:
        """The L3 record under ``key``."""
        ...

    def gc(self, keep: int, *, partial_grace_s: float = 600.0) -> GcReport:
        """Delete all but the newest ``keep`` versions (never one in use) and stale partials."""
        ...

    def close(self) -> None:
        """Release what the store opened itself."""
        ...


def check_percent(percent: float) -> float:
    """Validate a canary percent."""
    if not 0.0 <= percent <= 100.0:
        raise InvalidInputError(f"canary percent {percent} is out of range", hint="use 0 to 100")
    return float(percent)


def rollback_target(rollout: RolloutRecord, history: Sequence[str], published: set[str]) -> str:
    """The version a rollback returns to, given the activation history (oldest first).

    Raises :class:`PermanentError` when there is nothing to go back to.
    """
    current = rollout.stable
    for version in reversed(history):
        if version != current and version in published:
            return version
    raise PermanentError(
        f"no earlier version to roll back to (active: {current or 'none'})",
        hint="publish or activate another version first; `ragc versions` lists them",
    )


def plan_gc(
    ordered: Sequence[str], keep: int, protected: set[str]
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Split published versions (oldest first) into ``(remove, keep)``.

    The newest ``keep`` versions stay, and so does every protected one (stable, canary, pinned).
    """
    if keep < 1:
        raise InvalidInputError(f"gc --keep {keep} would delete every version", hint="keep >= 1")
    newest = set(ordered[-keep:])
    removed = tuple(v for v in ordered if v not in newest and v not in protected)
    kept = tuple(v for v in ordered if v not in removed)
    return removed, kept
