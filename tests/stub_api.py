"""A scripted local HTTP server standing in for a language-model API in tests.

:class:`ScriptedAPI` runs a ``ThreadingHTTPServer`` on ``127.0.0.1`` (a free port) in a
background thread. A ``POST`` to its :attr:`ScriptedAPI.route` pops the next scripted
:class:`Reply` (a status, headers and either reply text, a function computing it from the
request, or a raw JSON body) and records the request; once the queue is empty,
:attr:`ScriptedAPI.responder` answers (a whole compile). Subclasses say how a reply text becomes
a response body (:meth:`ScriptedAPI.render`) and what an error body looks like.
"""

from __future__ import annotations

import json
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Self

__all__ = ["RecordedRequest", "Reply", "ReplyText", "ScriptedAPI", "tokens"]

ReplyText = str | Callable[[dict[str, Any]], str]


def tokens(text: str) -> int:
    """A rough token count (four characters a token), at least 1 for non-empty text."""
    return max(1, len(text) // 4) if text else 0


@dataclass(frozen=True)
class Reply:
    """One scripted answer: a completion of ``text`` or, with ``body``, any JSON."""

    status: int = 200
    text: ReplyText = ""
    headers: dict[str, str] = field(default_factory=dict)
    body: Any = None
    drop: bool = False
    """Close the connection without answering (a connection error for the client)."""


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
        """The system blocks: Anthropic's ``system`` (a string becomes one block), or the
        Chat Completions messages of role ``system``, one block each."""
        if "system" in self.body:
            system = self.body["system"]
            return [{"type": "text", "text": system}] if isinstance(system, str) else list(system)
        return [
            {"type": "text", "text": _text(m["content"])}
            for m in self.body.get("messages", [])
            if m.get("role") == "system"
        ]

    @property
    def user_text(self) -> str:
        """The text of the last message."""
        return _text(self.body["messages"][-1]["content"])


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    return "".join(block.get("text", "") for block in content)


class ScriptedAPI:
    """The scripted server; ``base_url`` is what an SDK should be pointed at."""

    route = "/"
    """The one path that answers; anything else is a 404."""

    def __init__(self, *, model: str) -> None:
        self.model = model
        self.responder: Callable[[RecordedRequest], Reply | str] | None = None
        """Answers requests once the scripted queue is empty (e.g. a whole compile)."""
        self.requests: list[RecordedRequest] = []
        self._replies: deque[Reply] = deque()
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

    def error(self, status: int, *, headers: dict[str, str] | None = None) -> Reply:
        """An API error reply, e.g. ``stub.error(429, headers={"retry-after": "3"})``."""
        return Reply(status=status, headers=headers or {}, body=self.error_body(status))

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

    # -- for subclasses ------------------------------------------------------------------------

    def error_body(self, status: int, message: str = "scripted failure") -> dict[str, Any]:
        """The JSON body the API sends with an error status."""
        return {"error": {"message": message, "code": status}}

    def render(self, request: RecordedRequest, text: str) -> dict[str, Any]:
        """The response body for a reply of ``text``."""
        raise NotImplementedError

    # -- called by the handler ----------------------------------------------------------------

    def _next(self, request: RecordedRequest) -> Reply:
        with self._lock:
            self.requests.append(request)
            if self._replies:
                return self._replies.popleft()
        if self.responder is not None:
            reply = self.responder(request)
            return Reply(text=reply) if isinstance(reply, str) else reply
        return Reply(status=418, body=self.error_body(418, "the stub has no scripted reply left"))


def _handler_for(stub: ScriptedAPI) -> type[BaseHTTPRequestHandler]:
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
            if self.path.split("?")[0] != stub.route:
                self._send(404, {}, stub.error_body(404, f"no route {self.path}"))
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
                payload = stub.render(request, text)
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
