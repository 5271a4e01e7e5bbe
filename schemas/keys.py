"""Cache keys: the contract between the compiler, the stores and the service.

Shape: ``knowledge:{version}:{lang}[:tenant_{t}]:{kind}:{id}`` with ``kind`` one of
``exact | intent | topic``. Version, language and tenant are validated so they can never contain
the separator; the question and slot values are hashed, never stored raw in a key. Pointer keys
(``knowledge:active``, pins, the rollout record) live beside the versioned namespace.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from enum import StrEnum
from typing import Final

import msgspec

from schemas.errors import InvalidInputError
from schemas.normalize import NormalizedQuestion, language_tag, normalize_question

__all__ = [
    "ACTIVE_KEY",
    "PREFIX",
    "ROLLOUT_KEY",
    "KeyKind",
    "content_hash",
    "exact_key",
    "exact_key_of",
    "intent_key",
    "key_kind",
    "make_name",
    "pin_key",
    "question_hash",
    "slot_hash",
    "topic_key",
    "unique_name",
    "validate_tenant",
    "validate_version",
    "version_prefix",
]

PREFIX: Final = "knowledge"
ACTIVE_KEY: Final = f"{PREFIX}:active"
ROLLOUT_KEY: Final = f"{PREFIX}:rollout"

_VERSION: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}\Z")
_TENANT: Final = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}\Z")
_NAME: Final = re.compile(r"^[^\s:]{1,128}\Z")
"""Intent and topic names: 1-128 characters, no white space and no ``:`` (the separator)."""
_HASH_LEN: Final = 16


class KeyKind(StrEnum):
    """The artifact families a key can address."""

    EXACT = "exact"
    INTENT = "intent"
    TOPIC = "topic"


def content_hash(data: bytes | str, length: int = _HASH_LEN) -> str:
    """Hex SHA-256 of ``data`` (UTF-8 for text), truncated to ``length`` characters."""
    raw = data.encode("utf-8", "surrogatepass") if isinstance(data, str) else data
    return hashlib.sha256(raw).hexdigest()[:length]


def validate_version(version: str) -> str:
    """Return ``version`` if it is a usable label, else raise :class:`InvalidInputError`."""
    if not isinstance(version, str) or not _VERSION.match(version):
        raise InvalidInputError(
            f"version label {version!r} is not valid",
            hint="use 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit",
        )
    return version


def validate_tenant(tenant: str) -> str:
    """Return ``tenant`` if it is a usable tenant id, else raise :class:`InvalidInputError`."""
    if not isinstance(tenant, str) or not _TENANT.match(tenant):
        raise InvalidInputError(
            f"tenant id {tenant!r} is not valid",
            hint="use 1-63 lowercase letters, digits, '_' or '-', starting with a letter or digit",
        )
    return tenant


def _validate_name(name: str, what: str) -> str:
    if not _NAME.match(name):
        raise InvalidInputError(
            f"{what} {name!r} is not valid",
            hint="use 1-128 characters without spaces or ':'",
        )
    return name


_UNSAFE: Final = re.compile(r"[^A-Za-z0-9._-]+")
_MAX_NAME: Final = 96


def make_name(raw: str) -> str:
    """A valid intent or topic name derived from any text: unsafe runs become ``-``, and a
    long name is cut and suffixed with a hash of the whole, so distinct inputs stay distinct."""
    name = _UNSAFE.sub("-", raw).strip(".-_") or "x"
    if len(name) <= _MAX_NAME:
        return name
    return f"{name[: _MAX_NAME - 9].rstrip('.-_')}-{content_hash(raw, 8)}"


def version_prefix(version: str) -> str:
    """The namespace every key of ``version`` starts with (``knowledge:v3:``)."""
    return f"{PREFIX}:{validate_version(version)}:"


def _key(version: str, language: str, tenant: str | None, kind: KeyKind, ident: str) -> str:
    head = f"{version_prefix(version)}{language_tag(language)}"
    scope = f":tenant_{validate_tenant(tenant)}" if tenant is not None else ""
    return f"{head}{scope}:{kind.value}:{ident}"


def key_kind(key: str) -> KeyKind | None:
    """The record kind a contract key addresses (``knowledge:v:lang[:tenant_t]:kind:id``), or
    ``None`` when it is not such a key."""
    parts = key.split(":")
    if len(parts) < 5 or parts[0] != PREFIX:
        return None
    kind = parts[4] if parts[3].startswith("tenant_") else parts[3]
    return KeyKind(kind) if kind in KeyKind.__members__.values() else None


def question_hash(canonical: str) -> str:
    """The id of an exact entry: a hash of the question's canonical text."""
    return content_hash(canonical)


def exact_key(
    version: str, question: str, *, language: str | None = None, tenant: str | None = None
) -> str:
    """L1 key of a raw question (normalized here, so callers cannot skip normalization)."""
    normalized = normalize_question(question, language)
    return _key(version, normalized.language, tenant, KeyKind.EXACT, question_hash(normalized.text))


def exact_key_of(version: str, normalized: NormalizedQuestion, *, tenant: str | None = None) -> str:
    """L1 key of an already normalized question (the answer path normalizes once)."""
    return _key(version, normalized.language, tenant, KeyKind.EXACT, question_hash(normalized.text))


def slot_hash(slots: Mapping[str, object]) -> str:
    """A stable hash of slot values: order-independent, never the raw values."""
    canonical = msgspec.json.encode(dict(sorted((str(k), v) for k, v in slots.items())))
    return content_hash(canonical, 12)


def intent_key(
    version: str,
    intent: str,
    *,
    language: str | None = None,
    tenant: str | None = None,
    slots: Mapping[str, object] | None = None,
) -> str:
    """L2 key of an intent, with ``:slot_{hash}`` when slot values are given."""
    ident = _validate_name(intent, "intent")
    if slots:
        ident = f"{ident}:slot_{slot_hash(slots)}"
    return _key(version, language or "", tenant, KeyKind.INTENT, ident)


def topic_key(
    version: str, topic: str, *, language: str | None = None, tenant: str | None = None
) -> str:
    """L3 key of a topic block."""
    return _key(version, language or "", tenant, KeyKind.TOPIC, _validate_name(topic, "topic"))


def pin_key(tenant: str) -> str:
    """The pointer key that pins ``tenant`` to one version."""
    return f"{PREFIX}:pin:tenant_{validate_tenant(tenant)}"


def unique_name(base: str, taken: set[str], *, first: int = 2) -> str:
    """``base``, or the first of ``base-2``, ``base-3``, ... (from ``first``) not ``taken``; the
    name chosen is added to ``taken``."""
    name, suffix = base, first
    while name in taken:
        name = f"{base}-{suffix}"
        suffix += 1
    taken.add(name)
    return name
