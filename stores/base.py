"""The snapshot-store protocol every backend implements, and the pointer rules they share.

A store keeps whole versions side by side and a few small pointers: the rollout record (stable
version, canary version, canary percent), per-tenant pins and the activation history used by
rollback. Publishing is atomic (a version is invisible until complete) and versions are
immutable. The pure functions at the bottom decide rollback targets and what GC may delete, so
every backend behaves the same.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Final, Protocol, runtime_checkable

import msgspec

from schemas.errors import CorruptSnapshotError, InvalidInputError, PermanentError
from schemas.manifest import Manifest, Snapshot
from schemas.records import ExactAnswer, FallbackAnswer, IntentTemplate, TopicBlock
from schemas.rollout import PointerState, RolloutRecord, VersionInfo

__all__ = [
    "EXACT",
    "FALLBACKS",
    "INTENT",
    "MANIFEST",
    "PARTIAL_GRACE_S",
    "PARTIAL_HINT",
    "ROLLOUT",
    "TOPIC",
    "GcReport",
    "PointerNotifier",
    "RecordLookup",
    "SnapshotStore",
    "assemble_snapshot",
    "check_percent",
    "now_iso",
    "plan_gc",
    "rollback_target",
    "version_info",
]

EXACT: Final = msgspec.json.Decoder(ExactAnswer)
INTENT: Final = msgspec.json.Decoder(IntentTemplate)
TOPIC: Final = msgspec.json.Decoder(TopicBlock)
MANIFEST: Final = msgspec.json.Decoder(Manifest)
FALLBACKS: Final = msgspec.json.Decoder(tuple[FallbackAnswer, ...])
ROLLOUT: Final = msgspec.json.Decoder(RolloutRecord)
PARTIAL_GRACE_S: Final = 60.0
"""A partial load whose publisher has not written for this long is a dead publisher's: a
live one refreshes its load's heartbeat with every batch it writes (a batch takes well
under a second)."""
PARTIAL_HINT: Final = (
    "another publisher is loading it, or one died: `ragc gc` removes a load whose publisher "
    "has written nothing for 60 s (`--partial-grace 0` at once, when you know none is running)"
)
"""The record decoders every backend reads its rows with."""


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

    def gc(self, keep: int, *, partial_grace_s: float = PARTIAL_GRACE_S) -> GcReport:
        """Delete all but the newest ``keep`` versions (never one in use) and the partial loads
        whose publisher has been silent for ``partial_grace_s`` seconds (a dead one)."""
        ...

    def close(self) -> None:
        """Release what the store opened itself."""
        ...


@runtime_checkable
class RecordLookup(Protocol):
    """One record of a published version by its contract key, without loading the version
    (both backends can; the service loads whole versions and never needs it)."""

    def exact(self, key: str) -> ExactAnswer | None:
        """The L1 record under ``key`` (from :func:`schemas.keys.exact_key`)."""
        ...

    def intent(self, key: str) -> IntentTemplate | None:
        """The L2 record under ``key``."""
        ...

    def topic(self, key: str) -> TopicBlock | None:
        """The L3 record under ``key``."""
        ...


@runtime_checkable
class PointerNotifier(Protocol):
    """A store that pushes pointer changes (Redis pub/sub); the others are polled."""

    def subscribe_pointer_changes(self, callback: Callable[[str], None]) -> Callable[[], None]:
        """Call ``callback(message)`` on every pointer change, from a background thread, until
        the returned function is called."""
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


def now_iso() -> str:
    """The time a store stamps on what it writes (UTC, seconds)."""
    return datetime.now(UTC).isoformat(timespec="seconds")


def version_info(version: str, manifest: Manifest, state: PointerState) -> VersionInfo:
    """How ``ragc versions`` lists a published version under the pointers ``state``."""
    return VersionInfo(
        version=version,
        created_at=manifest.created_at,
        parent=manifest.parent,
        counts=manifest.counts,
        checksum=manifest.checksum,
        active=state.rollout.stable == version,
        canary=state.rollout.canary == version,
        pinned_by=tuple(sorted(t for t, v in state.pins.items() if v == version)),
    )


def assemble_snapshot(
    manifest: Manifest,
    rows: Iterable[tuple[str, bytes]],
    fallbacks: bytes,
    blobs: Mapping[str, bytes],
) -> Snapshot:
    """A version rebuilt from its stored ``(kind, payload)`` rows, verified against its
    manifest (:class:`~schemas.errors.CorruptSnapshotError` when anything is off)."""
    exact: dict[tuple[str, str, str | None], ExactAnswer] = {}
    intents: list[IntentTemplate] = []
    topics: list[TopicBlock] = []
    for kind, payload in rows:
        if kind == "exact":
            record = EXACT.decode(payload)
            exact.setdefault((record.id, record.language, record.tenant), record)
        elif kind == "intent":
            intents.append(INTENT.decode(payload))
        elif kind == "topic":
            topics.append(TOPIC.decode(payload))
        else:
            raise CorruptSnapshotError(
                f"version {manifest.version!r}: a stored row of unknown kind {kind!r}",
                hint="the version was modified in its store; publish it again as a new version",
            )
    snapshot = Snapshot(
        manifest=manifest,
        exact=tuple(exact.values()),
        intents=tuple(intents),
        topics=tuple(topics),
        fallbacks=FALLBACKS.decode(fallbacks),
        blobs=dict(blobs),
    )
    snapshot.verify()
    return snapshot
