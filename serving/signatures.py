"""The knowledge-changed webhook's signatures, checked before anything is recorded.

Deliveries are signed like Stripe's webhooks. The header is

    X-Ragc-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of f"{t}.".encode() + body>

and may carry several ``v1=`` values (one per key while a key is being rotated).
:func:`verify_signature` accepts it when one of them matches, in constant time, and ``t`` is
within the tolerance of the service's clock.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Sequence
from typing import Final, Literal

import msgspec

from schemas.errors import PermanentError

__all__ = [
    "DEFAULT_TOLERANCE",
    "SIGNATURE_HEADER",
    "SignatureError",
    "SignatureProblem",
    "SignedDelivery",
    "delivery_id",
    "sign",
    "verify_signature",
]

SIGNATURE_HEADER: Final = "X-Ragc-Signature"
DEFAULT_TOLERANCE: Final = 300
"""Seconds a signature stays valid (either side of the service's clock)."""
_HEX64: Final = re.compile(r"[0-9a-fA-F]{64}")
_MAX_SIGNATURES: Final = 16

SignatureProblem = Literal["missing", "malformed", "stale", "mismatch"]


class SignatureError(PermanentError):
    """A webhook delivery is unsigned, badly signed or too old; it was not accepted."""

    def __init__(self, problem: SignatureProblem, message: str, *, hint: str | None = None) -> None:
        self.problem = problem
        super().__init__(message, hint=hint)


class SignedDelivery(msgspec.Struct, frozen=True, kw_only=True):
    """What the signature check established about a request."""

    delivery: str
    signed_at: int


_HOW = f"send {SIGNATURE_HEADER}: t=<unix seconds>,v1=<hex HMAC-SHA256 of '<t>.' + body>"


def sign(secret: str, body: bytes, *, timestamp: int) -> str:
    """The ``X-Ragc-Signature`` value a sender sends with ``body`` (one ``v1``)."""
    return f"t={timestamp},v1={_mac(secret, timestamp, body)}"


def _mac(secret: str, timestamp: int | str, body: bytes) -> str:
    return hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()


def _parse(header: str) -> tuple[str, list[str]]:
    """The raw ``t`` and the ``v1`` values of a signature header."""
    stamps: list[str] = []
    signatures: list[str] = []
    for item in header.split(","):
        key, sep, value = item.strip().partition("=")
        key, value = key.strip(), value.strip()
        if not sep or not key:
            raise SignatureError(
                "malformed", f"malformed {SIGNATURE_HEADER}: {item.strip()[:40]!r} is not key=value"
            )
        if key == "t":
            stamps.append(value)
        elif key == "v1":
            if not _HEX64.fullmatch(value):
                raise SignatureError(
                    "malformed",
                    f"malformed {SIGNATURE_HEADER}: v1 must be 64 hex digits (HMAC-SHA256)",
                    hint=_HOW,
                )
            signatures.append(value.lower())
        # other schemes (v0, ...) are ignored, so senders can add new ones first
    if len(stamps) != 1 or not (stamps[0].isascii() and stamps[0].isdigit()) or len(stamps[0]) > 12:
        raise SignatureError(
            "malformed",
            f"malformed {SIGNATURE_HEADER}: it needs exactly one t=<unix seconds>",
            hint=_HOW,
        )
    if not signatures:
        raise SignatureError(
            "malformed", f"malformed {SIGNATURE_HEADER}: no v1= signature", hint=_HOW
        )
    if len(signatures) > _MAX_SIGNATURES:
        raise SignatureError(
            "malformed",
            f"malformed {SIGNATURE_HEADER}: more than {_MAX_SIGNATURES} v1= signatures",
        )
    return stamps[0], signatures


def verify_signature(
    secret: str | Sequence[str],
    header: str | None,
    body: bytes,
    *,
    now: float,
    tolerance: int = DEFAULT_TOLERANCE,
) -> int:
    """Check a delivery's signature header; return its timestamp or raise SignatureError.

    ``secret`` may be several keys (while the service's key is rotated); the header may carry
    several ``v1`` signatures (while the sender's key is rotated). One match is enough.
    """
    secrets = [secret] if isinstance(secret, str) else list(secret)
    if not any(secrets):
        raise ValueError("verify_signature needs a non-empty secret")
    if header is None or not header.strip():
        raise SignatureError("missing", f"the request has no {SIGNATURE_HEADER} header", hint=_HOW)
    raw, signatures = _parse(header)
    matched = False
    for key in filter(None, secrets):
        expected = _mac(key, raw, body).encode()
        for candidate in signatures:  # no early exit: every candidate costs the same
            matched |= hmac.compare_digest(expected, candidate.encode())
    if not matched:
        raise SignatureError(
            "mismatch",
            "the signature does not match the body: wrong secret, or the body was changed",
            hint="sign the exact bytes sent, with RAGC_WEBHOOK_SECRET",
        )
    stamp = int(raw)
    age = now - stamp
    if age > tolerance:
        raise SignatureError(
            "stale",
            f"the signature is stale: signed {int(age)} s ago, more than {tolerance} s",
            hint="sign each delivery when sending it; check the sender's clock",
        )
    if -age > tolerance:
        raise SignatureError(
            "stale",
            f"the signature timestamp is {int(-age)} s in the future, more than {tolerance} s",
            hint="check the sender's clock (t= is unix seconds, UTC)",
        )
    return stamp


def delivery_id(timestamp: int, body: bytes) -> str:
    """The id of a delivery: SHA-256 of the signed payload, the same whichever key signed it."""
    return hashlib.sha256(f"{timestamp}.".encode() + body).hexdigest()
