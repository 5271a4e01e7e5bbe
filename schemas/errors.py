"""The one error hierarchy of ragc.

Every error a user can meet derives from :class:`RagcError`. Two branches tell callers what to
do next: :class:`RetryableError` (the same call may succeed later: a timeout, a rate limit, a
dropped connection) and :class:`PermanentError` (retrying cannot help: bad input, a missing
version, a failed gate). Messages say what was wrong and what to do about it.
"""

from __future__ import annotations

__all__ = [
    "CorruptSnapshotError",
    "GateFailedError",
    "ImmutableVersionError",
    "InvalidInputError",
    "PermanentError",
    "RagcError",
    "RetryableError",
    "StoreConfigError",
    "StoreUnavailableError",
    "VersionNotFoundError",
    "is_retryable",
]


class RagcError(Exception):
    """Root of every error ragc raises on purpose."""

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        self.message = message
        self.hint = hint
        super().__init__(f"{message} ({hint})" if hint else message)

    def one_line(self) -> str:
        """The message and hint on one line, as the CLI prints it."""
        return str(self).replace("\n", " ")


class RetryableError(RagcError):
    """A transient failure: the same operation may succeed if tried again."""


class PermanentError(RagcError):
    """A failure that retrying will not fix; the input or the state must change."""


class InvalidInputError(PermanentError, ValueError):
    """A value supplied by a user or client is malformed."""


class StoreConfigError(PermanentError):
    """A store URL or store setting cannot be used."""


class StoreUnavailableError(RetryableError):
    """A store server did not answer (connection refused, reset or timed out)."""


class VersionNotFoundError(PermanentError):
    """A version label names no complete, published version."""

    def __init__(self, version: str, *, hint: str | None = None) -> None:
        self.version = version
        super().__init__(
            f"version {version!r} is not published",
            hint=hint or "run `ragc versions` to list the published versions",
        )


class ImmutableVersionError(PermanentError):
    """Something tried to write into a version that is already published."""

    def __init__(self, version: str) -> None:
        self.version = version
        super().__init__(
            f"version {version!r} is already published and versions are immutable",
            hint="publish the change as a new version instead",
        )


class CorruptSnapshotError(PermanentError):
    """A snapshot on disk or in a store does not match its manifest or schema."""


class GateFailedError(PermanentError):
    """A quality gate refused a snapshot; nothing was published."""

    def __init__(self, gate: str, reason: str) -> None:
        self.gate = gate
        self.reason = reason
        super().__init__(f"gate {gate!r} failed: {reason}", hint="nothing was published")


def is_retryable(exc: BaseException) -> bool:
    """True when ``exc`` is worth retrying (used as Prefect's retry condition)."""
    return isinstance(exc, RetryableError)
