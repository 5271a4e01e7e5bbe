"""A local stand-in for the Anthropic Messages API, scripted per test.

``POST /v1/messages`` answers as :class:`tests.stub_api.ScriptedAPI` scripts it. Prompt caching
is simulated: the first request carrying a given cached prefix (the system blocks up to a
``cache_control`` marker) reports ``cache_creation_input_tokens``, later ones
``cache_read_input_tokens``. Start it with the :func:`anthropic_stub` fixture (import it
explicitly) or ``with StubAnthropic() as stub:``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from tests.stub_api import RecordedRequest, Reply, ScriptedAPI, tokens

__all__ = ["RecordedRequest", "Reply", "StubAnthropic", "anthropic_stub"]

_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    404: "not_found_error",
    429: "rate_limit_error",
    500: "api_error",
    529: "overloaded_error",
}


class StubAnthropic(ScriptedAPI):
    """The scripted Messages API server."""

    route = "/v1/messages"

    def __init__(self, *, model: str = "claude-stub") -> None:
        super().__init__(model=model)
        self._cached_prefixes: set[str] = set()

    def error_body(self, status: int, message: str = "scripted failure") -> dict[str, Any]:
        kind = _ERROR_TYPES.get(status, "api_error")
        return {"type": "error", "error": {"type": kind, "message": message}}

    def render(self, request: RecordedRequest, text: str) -> dict[str, Any]:
        """A Messages response for ``text``, with usage as prompt caching would report it."""
        created = read = uncached = 0
        prefix = ""
        for block in request.system:
            prefix += json.dumps(block.get("text", "")) + "\n"
            count = tokens(block.get("text", ""))
            if block.get("cache_control"):
                with self._lock:
                    seen = prefix in self._cached_prefixes
                    self._cached_prefixes.add(prefix)
                read, created = (read + count, created) if seen else (read, created + count)
            else:
                uncached += count
        uncached += tokens(json.dumps(request.body.get("messages", [])))
        with self._lock:
            number = len(self.requests)
        return {
            "id": f"msg_stub_{number:04d}",
            "type": "message",
            "role": "assistant",
            "model": request.body.get("model", self.model),
            "content": [{"type": "text", "text": text}],
            "stop_reason": "end_turn",
            "stop_sequence": None,
            "usage": {
                "input_tokens": uncached,
                "output_tokens": tokens(text),
                "cache_creation_input_tokens": created,
                "cache_read_input_tokens": read,
            },
        }


@pytest.fixture
def anthropic_stub() -> Iterator[StubAnthropic]:
    """A running :class:`StubAnthropic`, stopped after the test."""
    with StubAnthropic() as stub:
        yield stub
