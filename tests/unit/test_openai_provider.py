"""The OpenAI-compatible provider against a local Chat Completions stub: every stage, the request
shape (knowledge-first system message, response formats), the SDK's retries, errors and usage."""

from __future__ import annotations

import json
from collections.abc import Iterator

import openai
import pytest

from providers import PROVIDERS, make_provider
from providers._chat import ProviderError, ProviderUnavailableError
from providers._prompts import REPLY_SCHEMAS, SYNTHESIZE_INSTRUCTIONS
from providers.base import DraftAnswer, Passage, Provider, Verdict
from providers.openai import (
    DEFAULT_MODEL,
    LOCAL_SERVER_KEY,
    OpenAIProvider,
    azure_provider,
)
from schemas.errors import InvalidInputError, PermanentError, RetryableError
from schemas.records import Source
from tests.stub_openai import RecordedRequest, Reply, StubOpenAI

MODEL = "qwen2.5-7b-instruct"
KEY = "sk-test"
FAST = {"retry-after-ms": "1"}
"""Makes the SDK's retry wait one millisecond."""
REFUNDS = Source(
    doc_id="refunds", path="policies/refunds.md", section="Return window", anchor="return-window"
)
PASSAGES = (
    Passage(
        id="refunds-1",
        title="Return window",
        text="Bikes can be returned within 30 days of delivery.",
        source=REFUNDS,
    ),
)
QUESTION = "How long do I have to return a bike?"
ANSWER = json.dumps({"answer": "Within 30 days.", "citations": ["refunds-1"], "abstain": False})


@pytest.fixture
def stub() -> Iterator[StubOpenAI]:
    with StubOpenAI() as server:
        yield server


@pytest.fixture
def provider(stub: StubOpenAI) -> Iterator[OpenAIProvider]:
    with OpenAIProvider(model=MODEL, api_key=KEY, base_url=stub.api_url, max_retries=2) as built:
        yield built


def only_request(stub: StubOpenAI) -> RecordedRequest:
    assert len(stub.requests) == 1
    return stub.requests[0]


def assert_request_shape(request: RecordedRequest, *, volatile: str) -> None:
    """Model, one system message holding the knowledge then the instructions, question last."""
    assert request.path == "/v1/chat/completions"
    assert request.headers["authorization"] == f"Bearer {KEY}"
    assert request.body["model"] == MODEL
    assert "temperature" not in request.body
    assert [m["role"] for m in request.body["messages"]] == ["system", "user"]
    (system,) = request.system
    assert system["text"].startswith("Knowledge passages:\n\n[refunds-1] Return window")
    assert volatile not in system["text"]
    assert volatile in request.user_text


# -- every stage ------------------------------------------------------------------------------


def test_the_provider_satisfies_the_protocol(provider: OpenAIProvider) -> None:
    assert isinstance(provider, Provider)
    assert (provider.name, provider.model) == ("openai", MODEL)
    assert {"openai", "azure"} <= set(PROVIDERS)


def test_synthesize_questions_asks_for_the_schema(
    stub: StubOpenAI, provider: OpenAIProvider
) -> None:
    stub.enqueue(json.dumps({"questions": ["return window", "How long can I return a bike?"]}))

    questions = provider.synthesize_questions("Refund policy", PASSAGES, 4)

    assert questions == ("return window", "How long can I return a bike?")
    request = only_request(stub)
    assert_request_shape(request, volatile="Refund policy")
    assert request.system[0]["text"].endswith(SYNTHESIZE_INSTRUCTIONS)
    fmt = request.body["response_format"]
    assert fmt["type"] == "json_schema"
    assert fmt["json_schema"]["schema"] == REPLY_SCHEMAS["synthesize"]
    assert fmt["json_schema"]["strict"] is True


def test_answer(stub: StubOpenAI, provider: OpenAIProvider) -> None:
    stub.enqueue(ANSWER)

    draft = provider.answer(QUESTION, PASSAGES)

    assert draft == DraftAnswer(text="Within 30 days.", citations=("refunds-1",))
    request = only_request(stub)
    assert_request_shape(request, volatile=QUESTION)
    assert request.body["max_completion_tokens"] == 1024
    assert request.body["response_format"]["json_schema"]["name"] == "ragc_answer"


def test_verify(stub: StubOpenAI, provider: OpenAIProvider) -> None:
    stub.enqueue('{"supported": false, "score": 1.7, "reason": "adds a fee"}')

    verdict = provider.verify(QUESTION, "30 days, for a fee.", PASSAGES)

    assert verdict == Verdict(supported=False, score=1.0, reason="adds a fee")
    assert_request_shape(only_request(stub), volatile="for a fee")


def test_compose_is_plain_text_within_the_budget(
    stub: StubOpenAI, provider: OpenAIProvider
) -> None:
    stub.enqueue("You can return it within 30 days.", "NO_ANSWER")

    assert provider.compose(QUESTION, "Returns: 30 days.", max_tokens=60) == (
        "You can return it within 30 days."
    )
    assert provider.compose("Do you sell cars?", "Returns: 30 days.", max_tokens=60) == ""
    first = stub.requests[0]
    assert "response_format" not in first.body
    assert first.body["max_completion_tokens"] == 60
    assert first.system[0]["text"].startswith("Returns: 30 days.")


def test_a_malformed_reply_is_a_provider_error_naming_the_stage(
    stub: StubOpenAI, provider: OpenAIProvider
) -> None:
    stub.enqueue("Sure! The answer is 30 days.")

    with pytest.raises(ProviderError, match="openai answer reply is malformed") as caught:
        provider.answer(QUESTION, PASSAGES)

    assert caught.value.stage == "answer"
    assert isinstance(caught.value, PermanentError)


# -- response formats -------------------------------------------------------------------------


def test_a_server_refusing_json_schema_is_asked_plainer_and_keeps_the_plainer_format(
    stub: StubOpenAI, provider: OpenAIProvider
) -> None:
    refusal = Reply(
        status=400,
        body={"error": {"message": "response_format json_schema is not supported", "code": 400}},
    )
    stub.enqueue(refusal, refusal, '["return window"]', ANSWER)

    assert provider.synthesize_questions("Refunds", PASSAGES, 3) == ("return window",)
    assert provider.response_format == "text"
    provider.answer(QUESTION, PASSAGES)

    formats = [r.body.get("response_format", {}).get("type") for r in stub.requests]
    assert formats == ["json_schema", "json_object", None, None]


def test_json_object_mode_by_setting(stub: StubOpenAI, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAGC_OPENAI_RESPONSE_FORMAT", "json_object")
    stub.enqueue(ANSWER)
    with OpenAIProvider(model=MODEL, api_key=KEY, base_url=stub.api_url) as built:
        built.answer(QUESTION, PASSAGES)
    assert only_request(stub).body["response_format"] == {"type": "json_object"}


def test_an_unknown_response_format_is_refused_with_the_choices() -> None:
    with pytest.raises(InvalidInputError, match="unknown response format 'xml'") as caught:
        OpenAIProvider(api_key=KEY, response_format="xml")  # type: ignore[arg-type]
    assert "json_schema, json_object, text" in str(caught.value)


def test_another_bad_request_is_not_retried_or_downgraded(
    stub: StubOpenAI, provider: OpenAIProvider
) -> None:
    stub.enqueue(Reply(status=400, body={"error": {"message": "context too long"}}))

    with pytest.raises(ProviderError, match="HTTP 400"):
        provider.answer(QUESTION, PASSAGES)

    assert len(stub.requests) == 1
    assert provider.response_format == "json_schema"


# -- retries (the SDK's own) ------------------------------------------------------------------


@pytest.mark.parametrize("status", [429, 500, 503])
def test_rate_limits_and_server_errors_are_retried(
    stub: StubOpenAI, provider: OpenAIProvider, status: int
) -> None:
    stub.enqueue(stub.error(status, headers=FAST), stub.error(status, headers=FAST), ANSWER)

    assert provider.answer(QUESTION, PASSAGES).citations == ("refunds-1",)
    assert len(stub.requests) == 3


def test_a_dropped_connection_is_retried(stub: StubOpenAI, provider: OpenAIProvider) -> None:
    stub.enqueue(Reply(drop=True), ANSWER)

    assert provider.answer(QUESTION, PASSAGES).text == "Within 30 days."
    assert len(stub.requests) == 2


def test_overload_through_every_retry_is_unavailable(
    stub: StubOpenAI, provider: OpenAIProvider
) -> None:
    stub.enqueue(*[stub.error(429, headers=FAST)] * 3)

    with pytest.raises(ProviderUnavailableError, match="openai verify call failed") as caught:
        provider.verify(QUESTION, "30 days", PASSAGES)

    assert isinstance(caught.value, RetryableError)
    assert (caught.value.stage, caught.value.status) == ("verify", 429)
    assert len(stub.requests) == 3  # the first try and max_retries=2


def test_an_auth_error_is_not_retried_and_points_at_the_key(
    stub: StubOpenAI, provider: OpenAIProvider
) -> None:
    stub.enqueue(stub.error(401))

    with pytest.raises(ProviderError, match="HTTP 401") as caught:
        provider.answer(QUESTION, PASSAGES)

    assert "OPENAI_API_KEY" in str(caught.value)
    assert len(stub.requests) == 1


# -- usage ------------------------------------------------------------------------------------


def test_usage_counts_tokens_and_the_prefix_cache(
    stub: StubOpenAI, provider: OpenAIProvider
) -> None:
    stub.enqueue(ANSWER, '{"supported": true, "score": 0.9, "reason": ""}')

    provider.answer(QUESTION, PASSAGES)
    provider.verify(QUESTION, "Within 30 days.", PASSAGES)
    usage = {u.stage: u for u in provider.usage()}

    assert usage["answer"].calls == 1
    assert usage["answer"].cache_read_input_tokens == 0
    assert usage["answer"].input_tokens > 0
    assert usage["verify"].cache_read_input_tokens > 0  # same knowledge block, first in the prompt
    assert usage["verify"].output_tokens > 0
    assert usage["compose"].calls == 0


def test_failed_calls_spend_no_usage(stub: StubOpenAI, provider: OpenAIProvider) -> None:
    stub.enqueue(stub.error(401))
    with pytest.raises(ProviderError):
        provider.answer(QUESTION, PASSAGES)
    assert all(u.calls == 0 for u in provider.usage())


# -- configuration ----------------------------------------------------------------------------


def test_a_missing_key_names_the_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    with pytest.raises(ProviderError, match="OPENAI_API_KEY is not set") as caught:
        make_provider("openai")
    assert "OPENAI_BASE_URL" in str(caught.value)


def test_a_self_hosted_server_needs_no_key(
    stub: StubOpenAI, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.setenv("OPENAI_BASE_URL", stub.api_url)
    monkeypatch.setenv("RAGC_OPENAI_MODEL", MODEL)
    stub.enqueue(ANSWER)

    built = make_provider("openai")
    try:
        built.answer(QUESTION, PASSAGES)
    finally:
        built.close()  # type: ignore[attr-defined]

    request = only_request(stub)
    assert request.headers["authorization"] == f"Bearer {LOCAL_SERVER_KEY}"
    assert request.body["model"] == MODEL


def test_the_default_model_is_one_the_installed_sdk_knows() -> None:
    from typing import get_args  # noqa: PLC0415

    from openai.types import ChatModel  # noqa: PLC0415

    assert DEFAULT_MODEL in get_args(ChatModel)


def test_an_injected_client_is_left_open(stub: StubOpenAI) -> None:
    client = openai.OpenAI(api_key=KEY, base_url=stub.api_url)
    stub.enqueue(ANSWER, ANSWER)
    with OpenAIProvider(client=client, model=MODEL) as built:
        built.answer(QUESTION, PASSAGES)
    client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}])
    assert len(stub.requests) == 2
    client.close()


def test_client_and_credentials_are_exclusive(stub: StubOpenAI) -> None:
    client = openai.OpenAI(api_key=KEY, base_url=stub.api_url)
    with pytest.raises(InvalidInputError, match="not both"):
        OpenAIProvider(client=client, api_key=KEY)
    client.close()


def test_azure_is_configured_from_the_environment(
    stub: StubOpenAI, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("AZURE_OPENAI_API_KEY", "AZURE_OPENAI_ENDPOINT", "RAGC_AZURE_DEPLOYMENT"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(ProviderError, match="AZURE_OPENAI_API_KEY, AZURE_OPENAI_ENDPOINT"):
        azure_provider()

    monkeypatch.setenv("AZURE_OPENAI_API_KEY", "azure-key")
    monkeypatch.setenv("AZURE_OPENAI_ENDPOINT", stub.base_url)
    monkeypatch.setenv("RAGC_AZURE_DEPLOYMENT", "answers-prod")
    stub.route = "/openai/deployments/answers-prod/chat/completions"
    stub.enqueue(ANSWER)
    with azure_provider() as built:
        assert (built.name, built.model) == ("azure", "answers-prod")
        built.answer(QUESTION, PASSAGES)

    request = only_request(stub)
    assert request.headers["api-key"] == "azure-key"
    assert "api-version=" in request.path
