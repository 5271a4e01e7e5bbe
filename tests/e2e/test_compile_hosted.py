"""The compile flow with each hosted provider (Anthropic, OpenAI-compatible), through the real
SDK, against a local stub of its API."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from flows.compile import CompileParams, compile_knowledge
from providers._prompts import (
    ANSWER_INSTRUCTIONS,
    COMPOSE_INSTRUCTIONS,
    SYNTHESIZE_INSTRUCTIONS,
    VERIFY_INSTRUCTIONS,
)
from tests.conftest import EXAMPLES
from tests.stub_anthropic import RecordedRequest, StubAnthropic
from tests.stub_api import ScriptedAPI
from tests.stub_openai import StubOpenAI

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("prefect_harness")]

_INSTRUCTIONS = (
    SYNTHESIZE_INSTRUCTIONS,
    ANSWER_INSTRUCTIONS,
    VERIFY_INSTRUCTIONS,
    COMPOSE_INSTRUCTIONS,
)
_PASSAGE = re.compile(r"^\[(?P<id>[^\]]+)\] .*?\n(?P<text>.+?)(?=\n\n\[|\Z)", re.M | re.S)


def respond(request: RecordedRequest) -> str:
    """What a well-behaved model would reply to each compile stage."""
    system = "\n\n".join(block["text"] for block in request.system)
    instructions = next(
        (i for i in _INSTRUCTIONS if system.endswith(i)), system.rsplit("\n\n", 1)[-1]
    )
    knowledge = system.removesuffix(instructions)
    passages = [(m["id"], m["text"].strip()) for m in _PASSAGE.finditer(knowledge)]
    if instructions == SYNTHESIZE_INSTRUCTIONS:
        title = re.search(r"about '(.+)' that", request.user_text)
        subject = title.group(1) if title else "this"
        questions = [f"What does the policy say about {subject}?", f"Explain {subject}"]
        return json.dumps({"questions": questions})
    if instructions == ANSWER_INSTRUCTIONS:
        ident, text = passages[0]
        first = re.split(r"(?<=[.!?])\s", text)[0]
        return json.dumps({"answer": first, "citations": [ident], "abstain": False})
    if instructions == VERIFY_INSTRUCTIONS:
        return json.dumps({"supported": True, "score": 0.93, "reason": "stated in the passage"})
    if instructions == COMPOSE_INSTRUCTIONS:
        return "NO_ANSWER"
    raise AssertionError(f"unexpected instructions: {instructions[:60]}")


@pytest.fixture(params=["anthropic", pytest.param("openai", marks=pytest.mark.slow)])
def stub(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[ScriptedAPI]:
    """The provider's API stub, answering every stage; the provider configured by env only."""
    server: ScriptedAPI
    if request.param == "anthropic":
        server = StubAnthropic()
        monkeypatch.setenv("ANTHROPIC_BASE_URL", server.base_url)
        monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-test-key")
    else:
        server = StubOpenAI()
        monkeypatch.setenv("OPENAI_BASE_URL", f"{server.base_url}/v1")
        monkeypatch.setenv("OPENAI_API_KEY", "sk-test-key")
    with server:
        server.responder = respond
        yield server


def test_compiling_with_a_hosted_provider_caches_the_knowledge_prefix_and_every_call(
    stub: ScriptedAPI, tmp_path: Path
) -> None:
    regression = tmp_path / "regression.jsonl"
    regression.write_text(
        json.dumps(
            {"query": "what's your return window", "accept": [{"entry_id": "refund.window"}]}
        )
        + "\n"
    )
    params = CompileParams(
        knowledge=str(EXAMPLES),
        store=f"sqlite:///{tmp_path / 'k.db'}",
        build_dir=str(tmp_path / "build"),
        provider="anthropic" if isinstance(stub, StubAnthropic) else "openai",
        regression=str(regression),
        publish=True,
    )

    first = compile_knowledge(params)
    calls = len(stub.requests)
    second = compile_knowledge(params)

    assert first.published
    assert all(g.passed for g in first.gates), first.gates
    assert calls > 0
    assert first.provider_calls["synthesize"] > 0
    assert first.provider_calls["answer"] == first.provider_calls["verify"]
    assert len(stub.requests) == calls  # the recompile was served from the build cache
    assert second.provider_calls == {}
    usage = {u.stage: u for u in first.usage}
    assert usage["answer"].calls == first.provider_calls["answer"]
    assert usage["verify"].cache_read_input_tokens > 0  # same passages as the answer call
    for request in stub.requests:
        assert request.headers["authorization"] == "Bearer sk-test-key"
        assert request.system[0]["text"].startswith(("Knowledge passages", "Topic"))
        if isinstance(stub, StubAnthropic):
            assert request.system[0]["cache_control"] == {"type": "ephemeral"}
        assert "Knowledge passages" not in request.user_text
