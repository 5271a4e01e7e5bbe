"""A local stand-in for the Anthropic Messages API, scripted per test.

:class:`StubAnthropic` runs a ``ThreadingHTTPServer`` on ``127.0.0.1`` (a free port) in a
background thread. ``POST /v1/messages`` pops the next scripted :class:`Reply` (a status, headers
and either reply text, a function computing it from the request, or a raw JSON body) and records
the request. Prompt caching is simulated: the first request carrying a given cached prefix (the
system blocks up to a ``cache_control`` marker) reports ``cache_creation_input_tokens``, later
ones ``cache_read_input_tokens``. Start it with the :func:`anthropic_stub` fixture (import it
explicitly) or ``with StubAnthropic() as stub:``.
"""

from __future__ import annotations

import json
import threading
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Self

import pytest

__all__ = ["RecordedRequest", "Reply", "StubAnthropic", "anthropic_stub", "error_body"]

ReplyText = str | Callable[[dict[str, Any]], str]
_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    404: "not_found_error",
    429: "rate_limit_error",
    500: "api_error",
    529: "overloaded_error",
}


def error_body(status: int, message: str = "scripted failure") -> dict[str, Any]:
    """The JSON body the API sends with an error status."""
    kind = _ERROR_TYPES.get(status, "api_error")
    return {"type": "error", "error": {"type": kind, "message": message}}


def _tokens(text: str) -> int:
    """A rough token count (four characters a token), at least 1 for non-empty text."""
    return max(1, len(text) // 4) if text else 0


@dataclass(frozen=True)
class Reply:
    """One scripted answer: a Messages response (``text``) or, with ``body``, any JSON."""

    status: int = 200
    text: ReplyText = ""
    headers: dict[str, str] = field(default_factory=dict)
    body: Any = None
    drop: bool = False
    """Close the connection without answering (a connection error for the client)."""

    @classmethod
    def error(cls, status: int, *, headers: dict[str, str] | None = None) -> Reply:
        """An API error reply, e.g. ``Reply.error(429, headers={"retry-after": "3"})``."""
        return cls(status=status, headers=headers or {}, body=error_body(status))


@dataclass(frozen=True)
class RecordedRequest:
    """A request the stub received."""

    method: str
    path: str
    headers: dict[str, str]
    """Header names lower-cased."""
    body: Any

    @property
    def system(self) -> list[dict[str, Any]]:
        """The system blocks (a string system prompt becomes one block)."""
        system = self.body.get("system", [])
        return [{"type": "text", "text": system}] if isinstance(system, str) else list(system)

    @property
    def user_text(self) -> str:
        """The text of the last user message."""
        content = self.body["messages"][-1]["content"]
        if isinstance(content, str):
            return content
        return "".join(block.get("text", "") for block in content)


class StubAnthropic:
    """The scripted Messages API server; ``base_url`` is what the SDK should be pointed at."""

    def __init__(self, *, model: str = "claude-stub") -> None:
        self.model = model
        self.responder: Callable[[RecordedRequest], Reply | str] | None = None
        """Answers requests once the scripted queue is empty (e.g. a whole compile)."""
        self.requests: list[RecordedRequest] = []
        self._replies: deque[Reply] = deque()
        self._cached_prefixes: set[str] = set()
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:<port>``."""
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def enqueue(self, *replies: Reply | str) -> None:
        """Script the next replies, in order; a plain string is a 200 with that text."""
        with self._lock:
            self._replies.extend(Reply(text=r) if isinstance(r, str) else r for r in replies)

    @property
    def pending(self) -> int:
        """Scripted replies not yet used."""
        with self._lock:
            return len(self._replies)

    def start(self) -> Self:
        """Serve in the background."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and release the port."""
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- called by the handler ----------------------------------------------------------------

    def _next(self, request: RecordedRequest) -> Reply:
        with self._lock:
            self.requests.append(request)
            if self._replies:
                return self._replies.popleft()
        if self.responder is not None:
            reply = self.responder(request)
            return Reply(text=reply) if isinstance(reply, str) else reply
        return Reply(status=418, body=error_body(418, "the stub has no scripted reply left"))

    def _message(self, request: RecordedRequest, text: str) -> dict[str, Any]:
        """A Messages response for ``text``, with usage as prompt caching would report it."""
        created = read = uncached = 0
        prefix = ""
        for block in request.system:
            prefix += json.dumps(block.get("text", "")) + "\n"
            tokens = _tokens(block.get("text", ""))
            if block.get("cache_control"):
                with self._lock:
                    seen = prefix in self._cached_prefixes
                    self._cached_prefixes.add(prefix)
                read, created = (read + tokens, created) if seen else (read, created + tokens)
            else:
                uncached += tokens
        uncached += _tokens(json.dumps(request.body.get("messages", [])))
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
                "output_tokens": _tokens(text),
                "cache_creation_input_tokens": created,
                "cache_read_input_tokens": read,
            },
        }


def _handler_for(stub: StubAnthropic) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.0"  # one request per connection: nothing lingers at shutdown

        def do_POST(self) -> None:
            length = int(self.headers.get("content-length") or 0)
            raw = self.rfile.read(length)
            try:
                body: Any = json.loads(raw or b"null")
            except json.JSONDecodeError:
                body = raw.decode("utf-8", "replace")
            request = RecordedRequest(
                method="POST",
                path=self.path,
                headers={k.lower(): v for k, v in self.headers.items()},
                body=body,
            )
            if self.path.split("?")[0] != "/v1/messages":
                self._send(404, {}, error_body(404, f"no route {self.path}"))
                return
            reply = stub._next(request)
            if reply.drop:
                self.close_connection = True
                self.connection.close()
                return
            if reply.body is not None:
                payload = reply.body
            else:
                text = reply.text(body) if callable(reply.text) else reply.text
                payload = stub._message(request, text)
            self._send(reply.status, reply.headers, payload)

        def _send(self, status: int, headers: dict[str, str], payload: Any) -> None:
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(data)))
            self.send_header("request-id", f"req_stub_{len(stub.requests):04d}")
            for name, value in headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:
            """Keep test output quiet."""

    return Handler


@pytest.fixture
def anthropic_stub() -> Iterator[StubAnthropic]:
    """A running :class:`StubAnthropic`, stopped after the test."""
    with StubAnthropic() as stub:
        yield stub
