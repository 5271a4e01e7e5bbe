"""Which version answers a request: pins, canary rollout and the stable pointer.

Pure functions over the pointer state the stores keep, so every backend routes alike.
"""

from __future__ import annotations

import hashlib

import msgspec

from schemas.errors import InvalidInputError

__all__ = ["PointerState", "RolloutRecord", "VersionInfo", "canary_bucket", "choose_version"]


class RolloutRecord(msgspec.Struct, frozen=True, kw_only=True):
    """The rollout pointer: ``stable`` serves everyone outside the canary share."""

    stable: str | None = None
    canary: str | None = None
    percent: float = 0.0
    updated_at: str = ""

    def __post_init__(self) -> None:
        if not 0.0 <= self.percent <= 100.0:
            raise InvalidInputError(
                f"canary percent {self.percent} is out of range", hint="use 0 to 100"
            )


class PointerState(msgspec.Struct, frozen=True, kw_only=True):
    """Everything a router needs to pick a version: the rollout record and tenant pins."""

    rollout: RolloutRecord
    pins: dict[str, str] = msgspec.field(default_factory=dict)

    @property
    def in_use(self) -> set[str]:
        """Every version these pointers name: stable, canary and each pinned one (what a
        replica keeps loaded and what GC never deletes)."""
        named = {self.rollout.stable, self.rollout.canary, *self.pins.values()}
        return {v for v in named if v is not None}


class VersionInfo(msgspec.Struct, frozen=True, kw_only=True):
    """One published version as ``ragc versions`` lists it."""

    version: str
    created_at: str
    parent: str | None
    counts: dict[str, int]
    checksum: str
    active: bool = False
    canary: bool = False
    pinned_by: tuple[str, ...] = ()


def canary_bucket(tenant: str | None, session: str | None) -> float:
    """A stable number in [0, 100) for a tenant and session; below the percent = canary."""
    seed = f"{tenant or ''}\x1f{session or ''}".encode()
    value = int.from_bytes(hashlib.sha256(seed).digest()[:8], "big")
    return (value % 1_000_000) / 10_000


def choose_version(
    state: PointerState, *, tenant: str | None = None, session: str | None = None
) -> str | None:
    """The version for this request: the tenant's pin, else canary by bucket, else stable."""
    if tenant is not None and tenant in state.pins:
        return state.pins[tenant]
    rollout = state.rollout
    if rollout.canary is not None and canary_bucket(tenant, session) < rollout.percent:
        return rollout.canary
    return rollout.stable
