"""Request and response bodies of the HTTP API (msgspec structs; validated by Litestar)."""

from __future__ import annotations

from pathlib import PurePosixPath
from typing import Annotated

import msgspec

from schemas.ladder import Answer
from schemas.rollout import Rollout, VersionInfo
from serving.dispatch import DispatchMode
from stores.audit import MissSummary
from stores.base import PARTIAL_GRACE_S, GcReport
from stores.ledger import DeliveryStatus
from stores.tenant_keys import MAX_LABEL, IssuedKey, TenantKey

__all__ = [
    "MAX_BATCH",
    "MAX_CHANGED",
    "MAX_QUESTION",
    "Answer",
    "AnswerRequest",
    "BatchRequest",
    "BatchResponse",
    "ErrorBody",
    "GcReport",
    "GcRequest",
    "Health",
    "IssuedKey",
    "KeyRequest",
    "KeysResponse",
    "KnowledgeChangedRequest",
    "KnowledgeChangedResponse",
    "MissesResponse",
    "PinRequest",
    "PinResponse",
    "RevokeKeyRequest",
    "Rollout",
    "RolloutRequest",
    "TenantKey",
    "VersionInfo",
    "VersionsResponse",
]

MAX_QUESTION = 2000
MAX_BATCH = 100
SlotValue = str | int | float | bool


class AnswerRequest(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """``POST /v1/answer``."""

    question: Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_QUESTION)]
    tenant: str | None = None
    language: Annotated[str, msgspec.Meta(max_length=35)] | None = None
    slots: dict[Annotated[str, msgspec.Meta(max_length=64)], SlotValue] | None = None
    session: Annotated[str, msgspec.Meta(max_length=128)] | None = None
    """Session id for canary assignment (else the ``X-Session-Id`` header)."""


class BatchRequest(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """``POST /v1/answer/batch``: up to :data:`MAX_BATCH` (100) questions, answered in order."""

    questions: Annotated[list[AnswerRequest], msgspec.Meta(min_length=1, max_length=MAX_BATCH)]


class BatchResponse(msgspec.Struct, frozen=True, kw_only=True):
    answers: list[Answer]


class ErrorBody(msgspec.Struct, frozen=True, kw_only=True):
    """Every error response: what went wrong and what to do."""

    status_code: int
    detail: str
    hint: str | None = None


class Health(msgspec.Struct, frozen=True, kw_only=True):
    """``/healthz`` and ``/readyz``: ``status`` is ``ok`` (alive), ``ready``, ``degraded``
    (answering from the versions loaded, but the pointers cannot be read: ``detail`` says why)
    or ``not ready``."""

    status: str
    version: str | None = None
    canary: str | None = None
    detail: str | None = None


class VersionsResponse(msgspec.Struct, frozen=True, kw_only=True):
    versions: list[VersionInfo]


class RolloutRequest(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    version: str
    percent: Annotated[float, msgspec.Meta(ge=0, le=100)] = 100.0


class PinRequest(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    tenant: str
    version: str | None = None
    """``None`` removes the pin."""


class PinResponse(msgspec.Struct, frozen=True, kw_only=True):
    tenant: str
    version: str | None


class KeyRequest(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """``POST /v1/admin/tenant-keys``: issue a key."""

    tenant: str
    label: Annotated[str, msgspec.Meta(max_length=MAX_LABEL)] = ""
    """What the key is for (shown in listings)."""


class RevokeKeyRequest(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    key_id: Annotated[str, msgspec.Meta(min_length=1, max_length=64)]


class KeysResponse(msgspec.Struct, frozen=True, kw_only=True):
    keys: list[TenantKey]


class GcRequest(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    keep: Annotated[int, msgspec.Meta(ge=1)] = 3
    partial_grace_s: Annotated[float, msgspec.Meta(ge=0)] = PARTIAL_GRACE_S
    """Seconds a partial load's publisher must have been silent (0: remove partials at once)."""


class MissesResponse(msgspec.Struct, frozen=True, kw_only=True):
    """Misses grouped by question; ``suggestions`` are the most frequent ones, worth an FAQ."""

    total: int
    misses: list[MissSummary]
    suggestions: list[MissSummary]


MAX_CHANGED = 1000
"""Most changed paths one knowledge-changed delivery may list."""
ChangedPath = Annotated[str, msgspec.Meta(min_length=1, max_length=1024)]
KnowledgeName = Annotated[
    str, msgspec.Meta(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$(?!\n)", max_length=64)
]


def _path_problem(path: str) -> str | None:
    """Why ``path`` is not a path relative to the knowledge folder (``None`` when it is)."""
    pure = PurePosixPath(path)
    if not path.strip() or "\x00" in path:
        return "is empty or has a NUL byte"
    if "\\" in path:
        return "uses backslashes (write paths with '/')"
    if pure.is_absolute() or (len(path) > 1 and path[1] == ":"):
        return "is absolute"
    if ".." in pure.parts:
        return "contains '..'"
    return None


class KnowledgeChangedRequest(
    msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True
):
    """``POST /v1/webhooks/knowledge-changed``: documents that changed in a knowledge folder."""

    changed: Annotated[list[ChangedPath], msgspec.Meta(min_length=1, max_length=MAX_CHANGED)]
    """Paths relative to the knowledge folder, without '..'."""
    knowledge: KnowledgeName | None = None
    """Knowledge source name (event resource ``ragc.knowledge.<name>``); default: the folder's."""

    def __post_init__(self) -> None:
        for path in self.changed:
            if (problem := _path_problem(path)) is not None:
                raise ValueError(
                    f"changed path {path[:200]!r} {problem}: give paths relative to the "
                    "knowledge folder, without '..'"
                )


class KnowledgeChangedResponse(msgspec.Struct, frozen=True, kw_only=True):
    """The accepted delivery and what was done with it."""

    delivery: str
    """Delivery id (SHA-256 of the signed payload); a replay of it is refused with 409."""
    status: DeliveryStatus
    """``dispatched``: event emitted or recompile started; ``recorded``: queued behind the
    running recompile; ``done``; ``failed`` (see ``detail``)."""
    mode: DispatchMode
    detail: str | None = None
