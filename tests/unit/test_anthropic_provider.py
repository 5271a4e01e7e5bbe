"""The Anthropic provider, through the real ``anthropic`` SDK, against a local stub server."""

from __future__ import annotations

import inspect
import json
from collections.abc import Callable, Iterator
from typing import Any

import anthropic
import httpx2
import pytest

from providers.anthropic import (
    AnthropicProvider,
    ProviderError,
    ProviderUnavailableError,
    retry_delay,
)
from providers.base import DraftAnswer, Passage, Provider, Verdict
from schemas.errors import InvalidInputError, PermanentError, RetryableError
from schemas.records import Source
from tests.stub_anthropic import RecordedRequest, Reply, StubAnthropic

MODEL = "claude-sonnet-4-6"  # not on the installed SDK's deprecated list (see the default test)
KEY = "sk-ant-test"
REFUNDS = Source(
    doc_id="refunds", path="policies/refunds.md", section="Return window", anchor="return-window"
)
SHIPPING = Source(doc_id="shipping", path="policies/shipping.md", section="Costs", anchor="costs")
PASSAGES = (
    Passage(
        id="refunds-1",
        title="Return window",
        text="Bikes can be returned within 30 days of delivery.",
        source=REFUNDS,
    ),
    Passage(id="shipping-1", text="Shipping is free above 50 EUR.", source=SHIPPING),
)
QUESTION = "How long do I have to return a bike?"


@pytest.fixture
def stub() -> Iterator[StubAnthropic]:
    with StubAnthropic() as server:
        yield server


@pytest.fixture
def sleeps() -> list[float]:
    return []


@pytest.fixture
def provider(stub: StubAnthropic, sleeps: list[float]) -> Iterator[AnthropicProvider]:
    with AnthropicProvider(
        model=MODEL,
        api_key=KEY,
        base_url=stub.base_url,
        max_retries=2,
        backoff=(0.5, 1.5),
        sleep=sleeps.append,
    ) as built:
        yield built


def only_request(stub: StubAnthropic) -> RecordedRequest:
    assert len(stub.requests) == 1
    return stub.requests[0]


def assert_request_shape(request: RecordedRequest, *, volatile: str) -> None:
    """Model, no sampling params, cached knowledge block then instructions, question in user."""
    assert request.method == "POST"
    assert request.path == "/v1/messages"
    assert request.headers["authorization"] == f"Bearer {KEY}"
    assert "x-api-key" not in request.headers  # the SDK 2.x sends the api key as a Bearer token
    assert request.headers["anthropic-version"] == anthropic._constants.ANTHROPIC_API_VERSION
    assert request.body["model"] == MODEL
    assert "temperature" not in request.body
    knowledge, instructions = request.system
    assert knowledge["cache_control"] == {"type": "ephemeral"}
    assert "cache_control" not in instructions
    assert volatile not in knowledge["text"]
    assert volatile not in instructions["text"]
    assert [m["role"] for m in request.body["messages"]] == ["user"]
    assert volatile in request.user_text


# -- happy paths and request shapes -----------------------------------------------------------


def test_the_provider_satisfies_the_protocol(provider: AnthropicProvider) -> None:
    assert isinstance(provider, Provider)
    assert provider.name == "anthropic"
    assert provider.model == MODEL


def test_synthesize_questions(stub: StubAnthropic, provider: AnthropicProvider) -> None:
    stub.enqueue(
        '```json\n["How long is the return window?", 7, "how long is the return  window?",'
        ' "Is shipping free?", "Can I return a used bike?", ""]\n```'
    )

    questions = provider.synthesize_questions("Refund policy", PASSAGES, 2)

    assert questions == ("How long is the return window?", "Is shipping free?")
    request = only_request(stub)
    assert_request_shape(request, volatile="Refund policy")
    knowledge = request.system[0]["text"]
    assert (
        "[refunds-1] Return window (source: policies/refunds.md#return-window)\nBikes" in knowledge
    )
    assert "[shipping-1] Costs (source: policies/shipping.md#costs)\nShipping is free" in knowledge
    assert "up to 2" in request.user_text


def test_answer(stub: StubAnthropic, provider: AnthropicProvider) -> None:
    stub.enqueue(
        json.dumps({"answer": "Within 30 days.", "citations": ["refunds-1"], "abstain": False})
    )

    draft = provider.answer(QUESTION, PASSAGES)

    assert draft == DraftAnswer(text="Within 30 days.", citations=("refunds-1",))
    request = only_request(stub)
    assert_request_shape(request, volatile=QUESTION)
    assert request.body["max_tokens"] == 1024


def test_answer_drops_citations_of_unknown_passages(
    stub: StubAnthropic, provider: AnthropicProvider
) -> None:
    reply = {"answer": "30 days.", "citations": ["made-up", "refunds-1", 3, "refunds-1"]}
    stub.enqueue(json.dumps(reply))

    assert provider.answer(QUESTION, PASSAGES).citations == ("refunds-1",)


@pytest.mark.parametrize(
    "reply",
    [
        {"answer": "30 days.", "citations": ["made-up"], "abstain": False},
        {"answer": "30 days.", "citations": [], "abstain": False},
        {"answer": "", "citations": ["refunds-1"], "abstain": True},
        {"answer": "30 days.", "citations": ["refunds-1"], "abstain": True},
    ],
)
def test_answer_abstains_without_a_valid_citation(
    stub: StubAnthropic, provider: AnthropicProvider, reply: dict[str, Any]
) -> None:
    stub.enqueue(json.dumps(reply))

    assert provider.answer(QUESTION, PASSAGES) == DraftAnswer(text="", abstained=True)


def test_verify(stub: StubAnthropic, provider: AnthropicProvider) -> None:
    stub.enqueue('{"supported": true, "score": 0.9, "reason": "stated in refunds-1"}')

    verdict = provider.verify(QUESTION, "Within 30 days.", PASSAGES)

    assert verdict == Verdict(supported=True, score=0.9, reason="stated in refunds-1")
    request = only_request(stub)
    assert_request_shape(request, volatile=QUESTION)
    assert "Within 30 days." in request.user_text


@pytest.mark.parametrize(("score", "clamped"), [(1.7, 1.0), (-0.3, 0.0), ("high", 0.0)])
def test_verify_clamps_the_score(
    stub: StubAnthropic, provider: AnthropicProvider, score: object, clamped: float
) -> None:
    stub.enqueue(json.dumps({"supported": False, "score": score, "reason": "x"}))

    assert provider.verify(QUESTION, "Maybe.", PASSAGES).score == clamped


def test_compose(stub: StubAnthropic, provider: AnthropicProvider) -> None:
    context = "Refunds: bikes can be returned within 30 days of delivery."
    stub.enqueue("You have 30 days.")

    assert provider.compose(QUESTION, context, max_tokens=64) == "You have 30 days."
    request = only_request(stub)
    assert_request_shape(request, volatile=QUESTION)
    assert request.system[0]["text"] == context
    assert "NO_ANSWER" in request.system[1]["text"]
    assert request.body["max_tokens"] == 64


def test_compose_returns_empty_for_no_answer(
    stub: StubAnthropic, provider: AnthropicProvider
) -> None:
    stub.enqueue("NO_ANSWER")

    assert provider.compose("Do you sell cars?", "Refunds: 30 days.", max_tokens=64) == ""


def test_nothing_to_ground_on_makes_no_request(
    stub: StubAnthropic, provider: AnthropicProvider
) -> None:
    assert provider.synthesize_questions("t", (), 3) == ()
    assert provider.synthesize_questions("t", PASSAGES, 0) == ()
    assert provider.answer(QUESTION, ()).abstained
    assert not provider.verify(QUESTION, "x", ()).supported
    assert provider.compose(QUESTION, "  ", max_tokens=64) == ""
    assert stub.requests == []


def test_no_sampling_parameters_exist_in_the_installed_sdk() -> None:
    # Why the brief's "temperature 0" is not sent: SDK 2.x removed it (API 2026-10-21 rejects it).
    create = anthropic.resources.messages.Messages.create
    assert "temperature" not in inspect.signature(create).parameters


# -- malformed replies ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("stage", "reply"),
    [
        ("synthesize", "Sure! Here are some: [not json"),
        ("synthesize", '{"questions": "not a list"}'),
        ("answer", "I think the answer is 30 days."),
        ("answer", '["30 days"]'),
        ("answer", '{"citations": ["refunds-1"]}'),
        ("verify", "```json\n{supported: yes}\n```"),
        ("verify", '{"supported": "yes", "score": 1}'),
        ("verify", ""),
    ],
)
def test_malformed_json_is_a_provider_error_naming_the_stage(
    stub: StubAnthropic, provider: AnthropicProvider, stage: str, reply: str
) -> None:
    stub.enqueue(reply)
    calls: dict[str, Callable[[], object]] = {
        "synthesize": lambda: provider.synthesize_questions("t", PASSAGES, 3),
        "answer": lambda: provider.answer(QUESTION, PASSAGES),
        "verify": lambda: provider.verify(QUESTION, "x", PASSAGES),
    }

    with pytest.raises(ProviderError, match=f"anthropic {stage} reply is malformed") as caught:
        calls[stage]()

    assert caught.value.stage == stage
    assert isinstance(caught.value, PermanentError)


# -- retries ----------------------------------------------------------------------------------


def test_a_rate_limit_is_retried_after_retry_after(
    stub: StubAnthropic, provider: AnthropicProvider, sleeps: list[float]
) -> None:
    stub.enqueue(stub.error(429, headers={"retry-after": "3"}), '{"supported": true}')

    assert provider.verify(QUESTION, "x", PASSAGES).supported

    assert len(stub.requests) == 2
    assert sleeps == [3.0]
    assert stub.requests[0].body == stub.requests[1].body


def test_a_rate_limit_without_retry_after_uses_the_backoff(
    stub: StubAnthropic, provider: AnthropicProvider, sleeps: list[float]
) -> None:
    stub.enqueue(stub.error(429), stub.error(529), "fine")

    assert provider.compose(QUESTION, "ctx", max_tokens=8) == "fine"
    assert sleeps == [0.5, 1.5]


def test_a_dropped_connection_is_retried(
    stub: StubAnthropic, provider: AnthropicProvider, sleeps: list[float]
) -> None:
    stub.enqueue(Reply(drop=True), "fine")

    assert provider.compose(QUESTION, "ctx", max_tokens=8) == "fine"
    assert len(stub.requests) == 2
    assert sleeps == [0.5]


def test_a_server_error_is_not_retried(
    stub: StubAnthropic, provider: AnthropicProvider, sleeps: list[float]
) -> None:
    stub.enqueue(*[stub.error(500)] * 5)

    with pytest.raises(ProviderError, match=r"anthropic answer call failed: HTTP 500") as caught:
        provider.answer(QUESTION, PASSAGES)

    assert len(stub.requests) == 1
    assert sleeps == []
    assert (caught.value.stage, caught.value.status) == ("answer", 500)


def test_an_auth_error_is_not_retried_and_points_at_the_key(
    stub: StubAnthropic, provider: AnthropicProvider
) -> None:
    stub.enqueue(stub.error(401))

    with pytest.raises(ProviderError, match=r"HTTP 401.*ANTHROPIC_API_KEY"):
        provider.compose(QUESTION, "ctx", max_tokens=8)
    assert len(stub.requests) == 1


def test_overload_until_retries_run_out_is_unavailable(
    stub: StubAnthropic, provider: AnthropicProvider, sleeps: list[float]
) -> None:
    stub.enqueue(*[stub.error(529)] * 10)

    with pytest.raises(ProviderUnavailableError, match="after 3 attempts: HTTP 529") as caught:
        provider.verify(QUESTION, "x", PASSAGES)

    assert len(stub.requests) == 2 + 1  # max_retries + 1
    assert sleeps == [0.5, 1.5]
    assert isinstance(caught.value, RetryableError)
    assert (caught.value.stage, caught.value.status) == ("verify", 529)


def _status_error(status: int, headers: dict[str, str] | None = None) -> anthropic.APIStatusError:
    request = httpx2.Request("POST", "http://127.0.0.1/v1/messages")
    response = httpx2.Response(status, headers=headers or {}, request=request)
    return anthropic.APIStatusError("scripted", response=response, body=None)


@pytest.mark.parametrize(
    ("exc", "attempt", "expected"),
    [
        (_status_error(429, {"retry-after": "3"}), 0, 3.0),
        (_status_error(429, {"retry-after": "3600"}), 0, 60.0),  # capped
        (_status_error(529, {"retry-after-ms": "250"}), 0, 0.25),
        (_status_error(529, {"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}), 0, 0.0),
        (_status_error(429, {"retry-after": "soon"}), 1, 2.0),
        (_status_error(529), 0, 1.0),
        (_status_error(529), 9, 8.0),  # past the end: the last backoff
        (anthropic.APITimeoutError(httpx2.Request("POST", "http://x")), 2, 4.0),
        (anthropic.APIConnectionError(request=httpx2.Request("POST", "http://x")), 0, 1.0),
        (_status_error(500), 0, None),
        (_status_error(503), 0, None),
        (_status_error(400), 0, None),
        (_status_error(408), 0, None),
        (ValueError("not an API error"), 0, None),
    ],
)
def test_retry_delay(exc: BaseException, attempt: int, expected: float | None) -> None:
    assert retry_delay(exc, attempt, (1, 2, 4, 8)) == expected


# -- usage and prompt caching -----------------------------------------------------------------


def test_usage_accumulates_and_repeated_passages_hit_the_cache(
    stub: StubAnthropic, provider: AnthropicProvider
) -> None:
    good = '{"answer": "30 days.", "citations": ["refunds-1"]}'
    stub.enqueue(good, good, '{"supported": true, "score": 1}')

    provider.answer(QUESTION, PASSAGES)
    provider.answer("What is the return window?", PASSAGES)
    provider.verify(QUESTION, "30 days.", PASSAGES)

    usage = {u.stage: u for u in provider.usage()}
    assert list(usage) == ["synthesize", "answer", "verify", "compose"]
    answer, verify = usage["answer"], usage["verify"]
    assert answer.calls == 2
    assert answer.cache_creation_input_tokens > 0
    assert answer.cache_read_input_tokens == answer.cache_creation_input_tokens
    assert verify.calls == 1
    assert verify.cache_read_input_tokens > 0  # same knowledge block, another stage
    assert verify.cache_creation_input_tokens == 0
    assert answer.input_tokens > 0
    assert answer.output_tokens > 0
    assert usage["synthesize"].calls == usage["compose"].calls == 0


def test_usage_returns_copies(stub: StubAnthropic, provider: AnthropicProvider) -> None:
    stub.enqueue("ok")
    provider.compose(QUESTION, "ctx", max_tokens=8)

    provider.usage()[3].calls = 99

    assert provider.usage()[3].calls == 1


def test_failed_calls_spend_no_usage(stub: StubAnthropic, provider: AnthropicProvider) -> None:
    stub.enqueue(stub.error(500))

    with pytest.raises(ProviderError):
        provider.compose(QUESTION, "ctx", max_tokens=8)

    assert all(u.calls == 0 for u in provider.usage())


# -- construction, credentials and client ownership -------------------------------------------


def test_a_missing_api_key_names_the_environment_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)

    with pytest.raises(PermanentError, match="ANTHROPIC_API_KEY"):
        AnthropicProvider(base_url="http://127.0.0.1:9")


def test_the_api_key_comes_from_the_environment(
    stub: StubAnthropic, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-from-env")
    stub.enqueue("ok")

    with AnthropicProvider(model=MODEL, base_url=stub.base_url) as provider:
        provider.compose(QUESTION, "ctx", max_tokens=8)

    assert only_request(stub).headers["authorization"] == "Bearer sk-from-env"


def test_an_injected_client_is_used_without_sdk_retries_and_left_open(
    stub: StubAnthropic, sleeps: list[float]
) -> None:
    client = anthropic.Anthropic(auth_token="tok-injected", base_url=stub.base_url, max_retries=5)
    stub.enqueue("ok", stub.error(500), stub.error(500))
    try:
        provider = AnthropicProvider(client=client, model=MODEL, sleep=sleeps.append)
        assert provider.compose(QUESTION, "ctx", max_tokens=8) == "ok"
        with pytest.raises(ProviderError, match="HTTP 500"):
            provider.compose(QUESTION, "ctx", max_tokens=8)
        provider.close()

        assert len(stub.requests) == 2  # the SDK's own retries (max_retries=5) are off
        assert stub.requests[0].headers["authorization"] == "Bearer tok-injected"
        assert not client.is_closed()
    finally:
        client.close()


def test_a_built_client_is_closed(stub: StubAnthropic) -> None:
    provider = AnthropicProvider(model=MODEL, api_key=KEY, base_url=stub.base_url)
    provider.close()

    assert provider._client.is_closed()


def test_client_and_credentials_are_exclusive(stub: StubAnthropic) -> None:
    with (
        anthropic.Anthropic(api_key=KEY, base_url=stub.base_url) as client,
        pytest.raises(InvalidInputError, match="either client"),
    ):
        AnthropicProvider(client=client, api_key=KEY)


def test_negative_max_retries_is_refused() -> None:
    with pytest.raises(InvalidInputError, match="max_retries"):
        AnthropicProvider(api_key=KEY, max_retries=-1)


def test_the_default_model_is_current_for_the_installed_sdk(stub: StubAnthropic) -> None:
    # The default must not be on the SDK's deprecated list (a call would warn).
    stub.enqueue("ok")
    with AnthropicProvider(api_key=KEY, base_url=stub.base_url) as provider:
        assert provider.model == "claude-sonnet-4-6"
        provider.compose(QUESTION, "ctx", max_tokens=8)
    assert only_request(stub).body["model"] == "claude-sonnet-4-6"
