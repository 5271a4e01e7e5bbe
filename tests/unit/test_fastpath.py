"""The answer route's fast path: which requests it serves itself, and what it hands on intact."""

from __future__ import annotations

import asyncio
import json
from types import SimpleNamespace
from typing import Any

import msgspec
import pytest

from schemas.errors import InvalidInputError
from schemas.ladder import Answer
from serving.deadlines import ReadDeadlines
from serving.fastpath import answer_fast_path
from serving.tenants import TenantAuth
from stores.tenant_keys import digest_key

ANSWER = Answer(
    answer="30 days.",
    layer="L1",
    entry_id="refund.window",
    sources=(),
    version="v1",
    cache_key="k",
    confidence=1.0,
    latency_ms=0.01,
)


class FakeService:
    def __init__(self, composer: str = "offline", error: Exception | None = None) -> None:
        self.composer = SimpleNamespace(name=composer)
        self.tenants = TenantAuth("trust", None)
        self.error = error
        self.calls: list[dict[str, Any]] = []

    async def answer_async(self, question: str, **kwargs: Any) -> Answer:
        self.calls.append({"question": question, **kwargs})
        if self.error is not None:
            raise self.error
        return ANSWER


class Handler:
    """Stands in for the controller's handler: records the body it was given."""

    def __init__(self) -> None:
        self.bodies: list[bytes] = []

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        self.bodies.append(body)
        await send({"type": "http.response.start", "status": 418, "headers": []})
        await send({"type": "http.response.body", "body": b"handler", "more_body": False})


def _run(
    service: FakeService | None,
    chunks: list[bytes],
    *,
    headers: list[tuple[bytes, bytes]] | None = None,
    method: str = "POST",
) -> tuple[Handler, list[dict[str, Any]]]:
    handler = Handler()
    app = answer_fast_path(handler)
    state = {"service": service} if service is not None else {}
    scope = {
        "type": "http",
        "method": method,
        "path": "/v1/answer",
        "headers": headers if headers is not None else [(b"content-type", b"application/json")],
        "app": SimpleNamespace(state=state),
    }
    messages = [
        {"type": "http.request", "body": c, "more_body": i < len(chunks) - 1}
        for i, c in enumerate(chunks)
    ]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    asyncio.run(app(scope, receive, send))  # type: ignore[arg-type]
    return handler, sent


BODY = json.dumps({"question": "What's your return window?", "tenant": "acme"}).encode()


def test_a_plain_json_post_is_answered_without_the_handler() -> None:
    service = FakeService()
    handler, sent = _run(service, [BODY[:10], BODY[10:]])
    assert handler.bodies == []
    assert sent[0]["status"] == 200
    assert (b"content-type", b"application/json") in sent[0]["headers"]
    assert msgspec.json.decode(sent[1]["body"], type=Answer) == ANSWER
    assert service.calls == [
        {
            "question": "What's your return window?",
            "tenant": "acme",
            "language": None,
            "slots": None,
            "session": None,
        }
    ]


@pytest.mark.parametrize(
    ("service", "chunks", "headers"),
    [
        (FakeService(), [BODY], [(b"x-session-id", b"s"), (b"content-type", b"application/json")]),
        (FakeService(), [BODY], [(b"content-type", b"text/plain")]),
        (FakeService(), [b'{"question": "hi", "extra": 1}'], None),
        (FakeService(), [b'{"question": '], None),
        (FakeService(error=InvalidInputError("bad tenant")), [BODY], None),
        (FakeService(composer="anthropic"), [BODY], None),
        (None, [BODY], None),
        (FakeService(), [b"x" * 10_000, b"y" * 10_000, b"z"], None),
    ],
    ids=[
        "session header",
        "not json",
        "unknown field",
        "truncated",
        "service error",
        "network composer",
        "not started",
        "large body",
    ],
)
def test_anything_else_reaches_the_handler_with_its_body_intact(
    service: FakeService | None, chunks: list[bytes], headers: list[tuple[bytes, bytes]] | None
) -> None:
    handler, sent = _run(service, chunks, headers=headers)
    assert handler.bodies == [b"".join(chunks)]
    assert sent[0]["status"] == 418


def test_other_methods_pass_straight_through() -> None:
    handler, sent = _run(FakeService(), [b""], method="GET")
    assert handler.bodies == [b""]
    assert sent[0]["status"] == 418


class _Keys:
    def live(self) -> dict[str, str]:
        return {digest_key("ragc_tk_acme"): "acme"}


def test_the_api_key_header_names_the_tenant_and_a_bad_one_goes_to_the_handler() -> None:
    service = FakeService()
    service.tenants = TenantAuth("keys", _Keys())
    body = json.dumps({"question": "What's your return window?"}).encode()
    json_header = (b"content-type", b"application/json")

    handler, _ = _run(service, [body], headers=[json_header, (b"x-api-key", b"ragc_tk_acme")])
    assert handler.bodies == []
    assert service.calls[-1]["tenant"] == "acme"

    handler, sent = _run(service, [body], headers=[json_header, (b"x-api-key", b"forged")])
    assert handler.bodies == [body]  # the handler answers 401, through the one mapping
    assert sent[0]["status"] == 418
    handler, _ = _run(service, [body], headers=[json_header, (b"x-api-key", b"k" * 300)])
    assert handler.bodies == [body]  # too long for the fast path: the handler's 400


def test_a_body_that_never_arrives_gets_a_408_and_the_connection_closed() -> None:
    handler = Handler()
    app = answer_fast_path(handler)
    deadlines = ReadDeadlines(0.05, tick=0.01)
    scope = {
        "type": "http",
        "method": "POST",
        "path": "/v1/answer",
        "headers": [(b"content-type", b"application/json")],
        "app": SimpleNamespace(state={"service": FakeService(), "deadlines": deadlines}),
    }
    sent: list[dict[str, Any]] = []
    first = True

    async def receive() -> dict[str, Any]:
        nonlocal first
        if first:  # half the body, then nothing
            first = False
            return {"type": "http.request", "body": b'{"question": "Wh', "more_body": True}
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    async def main() -> None:
        await asyncio.wait_for(app(scope, receive, send), timeout=60)  # type: ignore[arg-type]

    asyncio.run(main())
    assert handler.bodies == []
    assert sent[0]["status"] == 408
    assert (b"connection", b"close") in sent[0]["headers"]
    assert b"did not arrive within 0.05 s" in sent[1]["body"]


def test_a_real_cancellation_of_a_read_is_not_taken_for_a_deadline() -> None:
    deadlines = ReadDeadlines(3600)

    async def read() -> None:
        task = deadlines.arm()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            assert not deadlines.expired(task)
            raise
        finally:
            deadlines.disarm(task)

    async def main() -> bool:
        reader = asyncio.create_task(read())
        await asyncio.sleep(0)
        reader.cancel()
        with pytest.raises(asyncio.CancelledError):
            await reader
        return reader.cancelled()

    assert asyncio.run(main())
