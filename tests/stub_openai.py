"""A local stand-in for the OpenAI Chat Completions API (as OpenAI, vLLM, Ollama and llama.cpp
serve it), scripted per test.

``POST /v1/chat/completions`` answers as :class:`tests.stub_api.ScriptedAPI` scripts it. Prefix
caching is simulated the way those servers report it: a request whose system message starts
with the knowledge block (everything before the stage instructions) of an earlier request gets
that block's tokens as ``usage.prompt_tokens_details.cached_tokens``. Start it with the
:func:`openai_stub` fixture (import it explicitly) or ``with StubOpenAI() as stub:``; point the
SDK at :attr:`StubOpenAI.api_url`.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.stub_api import RecordedRequest, Reply, ScriptedAPI, tokens

__all__ = ["RecordedRequest", "Reply", "StubOpenAI", "openai_stub"]


class StubOpenAI(ScriptedAPI):
    """The scripted Chat Completions server."""

    route = "/v1/chat/completions"

    def __init__(self, *, model: str = "gpt-stub") -> None:
        super().__init__(model=model)
        self._prefixes: set[str] = set()

    @property
    def api_url(self) -> str:
        """The SDK's ``base_url``: ``http://127.0.0.1:<port>/v1``."""
        return f"{self.base_url}/v1"

    def error_body(self, status: int, message: str = "scripted failure") -> dict[str, Any]:
        return {"error": {"message": message, "type": "stub_error", "param": None, "code": None}}

    def render(self, request: RecordedRequest, text: str) -> dict[str, Any]:
        """A chat completion of ``text``, with usage as prefix caching would report it."""
        system = "".join(block["text"] for block in request.system)
        knowledge = system.rsplit("\n\n", 1)[0]
        with self._lock:
            seen = knowledge in self._prefixes
            self._prefixes.add(knowledge)
            number = len(self.requests)
        prompt = tokens(system) + tokens(request.user_text)
        return {
            "id": f"chatcmpl-stub{number:04d}",
            "object": "chat.completion",
            "created": 1_780_000_000,
            "model": request.body.get("model", self.model),
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": text},
                    "finish_reason": "stop",
                    "logprobs": None,
                }
            ],
            "usage": {
                "prompt_tokens": prompt,
                "completion_tokens": tokens(text),
                "total_tokens": prompt + tokens(text),
                "prompt_tokens_details": {"cached_tokens": tokens(knowledge) if seen else 0},
            },
        }


@pytest.fixture
def openai_stub() -> Iterator[StubOpenAI]:
    """A running :class:`StubOpenAI`, stopped after the test."""
    with StubOpenAI() as stub:
        yield stub
