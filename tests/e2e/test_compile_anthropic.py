"""The compile flow with the Anthropic provider, through the real SDK, against a local stub."""

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

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("prefect_harness")]

_PASSAGE = re.compile(r"^\[(?P<id>[^\]]+)\] .*?\n(?P<text>.+?)(?=\n\n\[|\Z)", re.M | re.S)


def respond(request: RecordedRequest) -> str:
    """What a well-behaved model would reply to each compile stage."""
    knowledge, instructions = (block["text"] for block in request.system[:2])
    passages = [(m["id"], m["text"].strip()) for m in _PASSAGE.finditer(knowledge)]
    if instructions == SYNTHESIZE_INSTRUCTIONS:
        title = re.search(r"about '(.+)' that", request.user_text)
        subject = title.group(1) if title else "this"
        return json.dumps([f"What does the policy say about {subject}?", f"Explain {subject}"])
    if instructions == ANSWER_INSTRUCTIONS:
        ident, text = passages[0]
        first = re.split(r"(?<=[.!?])\s", text)[0]
        return json.dumps({"answer": first, "citations": [ident], "abstain": False})
    if instructions == VERIFY_INSTRUCTIONS:
        return json.dumps({"supported": True, "score": 0.93, "reason": "stated in the passage"})
    if instructions == COMPOSE_INSTRUCTIONS:
        return "NO_ANSWER"
    raise AssertionError(f"unexpected instructions: {instructions[:60]}")


@pytest.fixture
def stub(monkeypatch: pytest.MonkeyPatch) -> Iterator[StubAnthropic]:
    with StubAnthropic() as server:
        server.responder = respond
        monkeypatch.setenv("ANTHROPIC_BASE_URL", server.base_url)
        monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-test-key")
        yield server


def test_compiling_with_anthropic_caches_the_knowledge_block_and_every_call(
    stub: StubAnthropic, tmp_path: Path
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
        provider="anthropic",
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
        assert request.system[0]["cache_control"] == {"type": "ephemeral"}
        assert "Knowledge passages" not in request.user_text
