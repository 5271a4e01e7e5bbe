"""Which version answers a request: pins, canary rollout and the stable pointer.

Pure functions over the pointer state the stores keep, so every backend routes alike.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

import msgspec

from schemas.errors import InvalidInputError

__all__ = [
    "PointerState",
    "Rollout",
    "RolloutRecord",
    "VersionInfo",
    "canary_bucket",
    "choose_version",
    "with_canary",
]


class Rollout(msgspec.Struct, frozen=True, kw_only=True):
    """The rollout pointer as the CLI and the admin API show it: ``stable`` serves everyone
    outside the canary's share."""

    stable: str | None = None
    canary: str | None = None
    percent: float = 0.0
    updated_at: str = ""

    def __post_init__(self) -> None:
        if not 0.0 <= self.percent <= 100.0:
            raise InvalidInputError(
                f"canary percent {self.percent} is out of range", hint="use 0 to 100"
            )


class RolloutRecord(Rollout, frozen=True, kw_only=True):
    """The rollout pointer as the stores keep it."""

    seed: str = ""
    """The canary's secret HMAC key, drawn when the canary starts and kept while its share
    changes: which sessions land in the canary is the server's choice, not the client's."""

    def public(self) -> Rollout:
        """The record without its seed (what leaves the server)."""
        return Rollout(
            stable=self.stable, canary=self.canary, percent=self.percent, updated_at=self.updated_at
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


def with_canary(current: RolloutRecord, version: str, percent: float) -> RolloutRecord:
    """``current`` with ``version`` as its canary at ``percent`` (the stable version itself:
    no canary). A new canary draws a new seed; raising or lowering the share of the same canary
    keeps it, so every session already in the canary stays there as the share grows."""
    if version == current.stable:
        return RolloutRecord(stable=current.stable)
    same = current.canary == version and current.seed
    return RolloutRecord(
        stable=current.stable,
        canary=version,
        percent=percent,
        seed=current.seed if same else secrets.token_hex(16),
    )


def canary_bucket(tenant: str | None, session: str | None, seed: str = "") -> float:
    """A stable number in [0, 100) for a tenant and session; below the percent = canary.

    With a ``seed`` (the rollout's secret) it is an HMAC, so a client that picks its session id
    cannot pick its bucket; without one, a plain hash (review sampling, where nothing is secret).
    """
    message = f"{tenant or ''}\x1f{session or ''}".encode()
    digest = (
        hmac.digest(seed.encode(), message, "sha256") if seed else hashlib.sha256(message).digest()
    )
    value = int.from_bytes(digest[:8], "big")
    return (value % 1_000_000) / 10_000


def choose_version(
    state: PointerState, *, tenant: str | None = None, session: str | None = None
) -> str | None:
    """The version for this request: the tenant's pin, else canary by bucket, else stable."""
    if tenant is not None and tenant in state.pins:
        return state.pins[tenant]
    rollout = state.rollout
    if (
        rollout.canary is not None
        and canary_bucket(tenant, session, rollout.seed) < rollout.percent
    ):
        return rollout.canary
    return rollout.stable
