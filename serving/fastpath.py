"""The hot path of ``POST /v1/answer``, as route middleware in front of its own handler.

An L1 answer costs the service about 15 µs; Litestar's request machinery around it (body
stream, signature model, dependency injection, header parameter, response object) costs about
twice that again, and the framework's own floor for a JSON POST is roughly half of its floor
for a GET. The middleware serves the common request — a JSON body, no session header, the
offline composer, nothing unusual — with the same request struct, the same service call
(``answer_async``: a question that needs the sentence encoder awaits its batch) and the same
response encoder, straight on the ASGI interface. Everything else goes to the controller's
handler with the body replayed untouched: other content types, a session header, an
undecodable or invalid body, a service error. So validation errors, error bodies, the OpenAPI
document and the one exception-to-HTTP mapping stay the controller's, and a response is the
same bytes whichever way it went (``latency_ms`` aside).
"""

from __future__ import annotations

from typing import Final

import msgspec
from litestar.enums import ScopeType
from litestar.types import ASGIApp, HTTPRequestEvent, Receive, ReceiveMessage, Scope, Send

from serving.deadlines import ReadDeadlines
from serving.dto import AnswerRequest, ErrorBody
from serving.errors import BodyTimeoutError
from serving.service import AnswerService, Asked

__all__ = ["MAX_KEY", "answer_fast_path", "asked"]

_JSON: Final = b"application/json"
_SESSION: Final = b"x-session-id"
_KEY: Final = b"x-api-key"
MAX_KEY: Final = 256
"""Longest ``X-API-Key`` header (a tenant key is 51 characters)."""
_MAX_FAST_BODY: Final = 16 * 1024
"""Larger bodies go to the handler (a question is at most 2,000 characters)."""

_decoder = msgspec.json.Decoder(AnswerRequest)
_encoder = msgspec.json.Encoder()


def _timed_out(error: BodyTimeoutError) -> bytes:
    """The 408 body, as the one exception mapping (``serving.errors``) writes it."""
    return _encoder.encode(ErrorBody(status_code=408, detail=error.message, hint=error.hint))


def answer_fast_path(app: ASGIApp) -> ASGIApp:
    """Wrap the answer handler's ASGI app ``app`` (Litestar route middleware)."""

    async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
        plain, key = _plain(scope) if scope["type"] == ScopeType.HTTP else (False, None)
        if not plain:
            await app(scope, receive, send)
            return
        state = scope["app"].state
        deadlines: ReadDeadlines | None = state.get("deadlines")
        try:
            reading = _read(receive)
            chunks, last, more = await (deadlines.within(reading) if deadlines else reading)
        except BodyTimeoutError as exc:
            await _respond(send, 408, _timed_out(exc), close=True)
            return
        if last is not None or more:  # a disconnect, or a body too large for the fast path
            await app(scope, _replay(chunks, receive, last, more=more), send)
            return
        body = b"".join(chunks)
        service: AnswerService | None = state.get("service")
        if service is None or service.composer.name != "offline":
            await app(scope, _replay([body], receive, None), send)
            return
        try:
            data = _decoder.decode(body)
            answer = await service.answer_async(data.question, **asked(service, data, key=key))
        except Exception:  # noqa: BLE001 - the handler reports it, through the one mapping
            await app(scope, _replay([body], receive, None), send)
            return
        await _respond(send, 200, _encoder.encode(answer))

    return middleware


async def _read(receive: Receive) -> tuple[list[bytes], ReceiveMessage | None, bool]:
    """The body's chunks, read until the last one, a disconnect (returned as the second item),
    or more than the fast path takes (the third item: more is to come)."""
    chunks: list[bytes] = []
    size = 0
    more = True
    while more:
        message = await receive()
        if message["type"] != "http.request":
            return chunks, message, False
        chunk = message.get("body", b"")
        chunks.append(chunk)
        size += len(chunk)
        more = message.get("more_body", False)
        if size > _MAX_FAST_BODY:
            return chunks, None, more
    return chunks, None, False


async def _respond(send: Send, status: int, body: bytes, *, close: bool = False) -> None:
    headers = [(b"content-type", _JSON), (b"content-length", str(len(body)).encode("ascii"))]
    if close:
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})


def asked(
    service: AnswerService, data: AnswerRequest, *, key: str | None, session: str | None = None
) -> Asked:
    """The service's keywords for one request: its tenant is the one its API key belongs to
    (see :mod:`serving.tenants`), its session the body's, else the header's."""
    return {
        "tenant": service.tenants.identify(data.tenant, key),
        "language": data.language,
        "slots": data.slots,
        "session": data.session or session,
    }


def _plain(scope: Scope) -> tuple[bool, str | None]:
    """Whether the request is a JSON POST without a session header (the header needs the
    handler's validation), and its API key."""
    if scope.get("method") != "POST":
        return False, None
    json = False
    key = None
    for name, value in scope["headers"]:
        if name == _SESSION:
            return False, None
        if name == _KEY:
            if len(value) > MAX_KEY:
                return False, None
            key = value.decode("latin-1")
        elif name == b"content-type":
            json = value.split(b";", 1)[0].strip().lower() == _JSON
    return json, key


def _replay(
    chunks: list[bytes], receive: Receive, last: ReceiveMessage | None, *, more: bool = False
) -> Receive:
    """``receive`` for the handler: what was already read, then the rest of the stream."""
    first: HTTPRequestEvent = {
        "type": "http.request",
        "body": b"".join(chunks),
        "more_body": more or last is not None,
    }
    pending: list[ReceiveMessage] = [first]
    if last is not None:
        pending.append(last)

    async def replayed() -> ReceiveMessage:
        if pending:
            return pending.pop(0)
        return await receive()

    return replayed
