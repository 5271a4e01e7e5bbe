"""The Anthropic provider: each compile stage as one Messages API call through the official SDK.

Every call puts the knowledge (the passages, or the L3 context) in a system block marked
``cache_control: ephemeral``, followed by a short per-stage instruction block; the volatile text
(the question) goes only in the user message, so repeated calls over the same passages read the
knowledge from the provider's prompt cache. No ``temperature`` is sent: the ``anthropic`` SDK
2.x has no sampling parameters and its API version (``2026-10-21``) rejects them with HTTP 400.

Retries are ours, not the SDK's (it is built with ``max_retries=0``): only rate limits (429),
overload (529) and timeouts or dropped connections are retried, honouring ``retry-after``;
anything else fails at once with :class:`ProviderError`. See :func:`retry_delay`.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

import anthropic
from anthropic.types import MessageParam, TextBlockParam

from providers._chat import (
    STAGES,
    ChatProvider,
    Prompt,
    ProviderError,
    ProviderUnavailableError,
)
from schemas.errors import InvalidInputError

__all__ = [
    "API_KEY_ENV",
    "MAX_RETRY_AFTER",
    "RETRYABLE_STATUSES",
    "STAGES",
    "AnthropicProvider",
    "ProviderError",
    "ProviderUnavailableError",
    "retry_delay",
]

DEFAULT_MODEL = "claude-sonnet-4-6"
"""A current model; ``RAGC_ANTHROPIC_MODEL`` or ``--model`` choose another."""

API_KEY_ENV = "ANTHROPIC_API_KEY"
RETRYABLE_STATUSES = frozenset({429, 529})
"""HTTP statuses worth retrying: rate limited, overloaded. Every other status fails at once."""
MAX_RETRY_AFTER = 60.0
"""Longest wait, in seconds, a ``retry-after`` header can impose."""


def retry_delay(
    exc: BaseException,
    attempt: int,
    backoff: Sequence[float],
    *,
    cap: float = MAX_RETRY_AFTER,
) -> float | None:
    """Seconds to wait before retrying after ``exc`` on attempt ``attempt`` (0-based).

    ``None`` means "do not retry": only 429, 529, timeouts and connection errors are transient.
    A ``retry-after-ms`` or ``retry-after`` header (seconds or an HTTP date) wins, capped at
    ``cap``; otherwise the delay is ``backoff[attempt]`` (its last entry once past the end).
    """
    if isinstance(exc, anthropic.APIStatusError):
        if exc.status_code not in RETRYABLE_STATUSES:
            return None
        after = _retry_after(exc.response.headers)
        if after is not None:
            return min(after, cap)
    elif not isinstance(exc, anthropic.APIConnectionError):  # APITimeoutError is one too
        return None
    if not backoff:
        return 0.0
    return max(0.0, float(backoff[min(attempt, len(backoff) - 1)]))


def _retry_after(headers: Mapping[str, str]) -> float | None:
    """The wait a ``retry-after-ms`` / ``retry-after`` header asks for, if it is readable."""
    seconds: float | None = None
    if (millis := headers.get("retry-after-ms")) is not None:
        try:
            seconds = float(millis) / 1000
        except ValueError:
            seconds = None
    if seconds is None and (raw := headers.get("retry-after")) is not None:
        try:
            seconds = float(raw)
        except ValueError:
            try:
                when = parsedate_to_datetime(raw)
            except (TypeError, ValueError):
                return None
            if when.tzinfo is None:
                when = when.replace(tzinfo=UTC)
            seconds = (when - datetime.now(UTC)).total_seconds()
    if seconds is None or not math.isfinite(seconds):
        return None
    return max(0.0, seconds)


class AnthropicProvider(ChatProvider):
    """A :class:`providers.base.Provider` backed by Claude through the ``anthropic`` SDK.

    Pass ``client`` to reuse an ``anthropic.Anthropic`` (the provider then never closes it and
    ``api_key``/``base_url`` must be left unset); otherwise one is built from ``api_key`` or the
    ``ANTHROPIC_API_KEY`` environment variable and closed by :meth:`close`. ``max_retries`` counts
    retries after the first attempt; ``sleep`` is injectable so tests never wait.
    """

    name = "anthropic"

    def __init__(
        self,
        *,
        client: anthropic.Anthropic | None = None,
        model: str = DEFAULT_MODEL,
        api_key: str | None = None,
        base_url: str | None = None,
        max_retries: int = 4,
        timeout: float = 60.0,
        backoff: Sequence[float] = (1, 2, 4, 8),
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        super().__init__()
        if max_retries < 0:
            raise InvalidInputError(f"max_retries must be >= 0, got {max_retries}")
        self.model = model
        self._max_retries = max_retries
        self._backoff = tuple(float(b) for b in backoff)
        self._sleep = sleep
        if client is None:
            key = api_key or os.environ.get(API_KEY_ENV)
            if not key:
                raise ProviderError(
                    f"no Anthropic API key: {API_KEY_ENV} is not set",
                    hint=f"export {API_KEY_ENV}=... or pass api_key= to AnthropicProvider",
                )
            self._client = anthropic.Anthropic(
                api_key=key, base_url=base_url, max_retries=0, timeout=timeout
            )
            self._opened = self._client
        elif api_key is not None or base_url is not None:
            raise InvalidInputError("pass either client= or api_key=/base_url=, not both")
        else:
            self._client = client.with_options(max_retries=0, timeout=timeout)

    # -- internals -----------------------------------------------------------------------------

    def _complete(self, prompt: Prompt) -> str:
        """One Messages call (with our retries); the reply's text, usage recorded."""
        stage = prompt.stage
        system: list[TextBlockParam] = [
            {"type": "text", "text": prompt.knowledge, "cache_control": {"type": "ephemeral"}},
            {"type": "text", "text": prompt.instructions},
        ]
        messages: list[MessageParam] = [{"role": "user", "content": prompt.request}]
        attempt = 0
        while True:
            try:
                message = self._client.messages.create(
                    model=self.model,
                    max_tokens=prompt.budget,
                    system=system,
                    messages=messages,
                )
                break
            except anthropic.APIError as exc:
                delay = retry_delay(exc, attempt, self._backoff)
                if delay is None:
                    raise _permanent(stage, exc) from exc
                if attempt >= self._max_retries:
                    raise ProviderUnavailableError(
                        f"anthropic {stage} call failed after {attempt + 1} attempts: "
                        f"{_describe(exc)}",
                        stage=stage,
                        status=getattr(exc, "status_code", None),
                    ) from exc
                self._sleep(delay)
                attempt += 1
        usage = message.usage
        self._record(
            stage,
            input_tokens=usage.input_tokens,
            output_tokens=usage.output_tokens,
            cache_read=usage.cache_read_input_tokens or 0,
            cache_write=usage.cache_creation_input_tokens or 0,
        )
        return "".join(block.text for block in message.content if block.type == "text")


def _permanent(stage: str, exc: anthropic.APIError) -> ProviderError:
    """The ProviderError for a failure that is not worth retrying."""
    status = exc.status_code if isinstance(exc, anthropic.APIStatusError) else None
    hint = None
    if status in (401, 403):
        hint = f"check {API_KEY_ENV}"
    elif status is not None and status >= 500:
        hint = "the API failed; server errors other than 529 are not retried"
    return ProviderError(
        f"anthropic {stage} call failed: {_describe(exc)}", stage=stage, status=status, hint=hint
    )


def _describe(exc: anthropic.APIError) -> str:
    if isinstance(exc, anthropic.APIStatusError):
        detail = exc.api_message or exc.response.reason_phrase
        return f"HTTP {exc.status_code}" + (f" ({detail})" if detail else "")
    return f"{type(exc).__name__}: {exc.message}"
