"""Every request, observed: a request id, HTTP metrics, an optional access log, JSON logs.

:func:`observe_requests` is the app's outermost middleware. It takes the client's
``X-Request-Id`` (when it is a plain token of at most 64 characters) or draws one, returns it
in the response header, and keeps it in :data:`REQUEST_ID` for the request's log lines; it
counts the request in ``ragc_http_requests_total{method,route,status}`` and its duration in
``ragc_http_request_duration_seconds{route}`` (``route`` is the route's template, never the raw
path, so the series stay few); with ``RAGC_ACCESS_LOG=1`` it writes one ``ragc.access`` line
per request.

:func:`configure_logging` sets up the process's log output: ``RAGC_LOG_FORMAT=json`` writes one
JSON object per line (time, level, logger, message, request id, and any ``extra`` fields), as
log collectors want it; ``text`` (the default) is for people.
"""

from __future__ import annotations

import json
import logging
import re
import secrets
import sys
import time
from contextvars import ContextVar
from typing import Any, Final, Literal

from litestar.enums import ScopeType
from litestar.types import ASGIApp, Message, Receive, Scope, Send

__all__ = [
    "REQUEST_ID",
    "JsonFormatter",
    "configure_logging",
    "observe_requests",
]

REQUEST_ID: ContextVar[str | None] = ContextVar("ragc_request_id", default=None)
"""The id of the request being served (``None`` outside one)."""

_HEADER: Final = b"x-request-id"
_VALID_ID: Final = re.compile(rb"[A-Za-z0-9._:-]{1,64}")
access_logger = logging.getLogger("ragc.access")

LogFormat = Literal["text", "json"]
_STANDARD: Final = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {
    "message",
    "asctime",
    "request_id",
}


def _request_id(scope: Scope) -> bytes:
    for name, value in scope["headers"]:
        if name == _HEADER:
            return value if _VALID_ID.fullmatch(value) else secrets.token_hex(8).encode()
    return secrets.token_hex(8).encode()


def observe_requests(app: ASGIApp) -> ASGIApp:
    """The observing middleware around ``app`` (Litestar app-level middleware)."""

    async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != ScopeType.HTTP:
            await app(scope, receive, send)
            return
        started = time.perf_counter()
        request_id = _request_id(scope)
        token = REQUEST_ID.set(request_id.decode("ascii"))
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), (_HEADER, request_id)]
            await send(message)

        try:
            await app(scope, receive, send_with_id)
        finally:
            elapsed = time.perf_counter() - started
            route = scope.get("path_template") or "(unrouted)"
            state = scope["app"].state
            service = state.get("service")
            if service is not None:
                service.metrics.observe_http(scope["method"], route, status, elapsed)
            if state.get("access_log"):
                access_logger.info(
                    "%s %s %d %.2f ms",
                    scope["method"],
                    scope["path"],
                    status,
                    elapsed * 1000,
                    extra={
                        "method": scope["method"],
                        "path": scope["path"],
                        "status": status,
                        "duration_ms": round(elapsed * 1000, 3),
                        "client": (scope.get("client") or ("", 0))[0],
                    },
                )
            REQUEST_ID.reset(token)

    return middleware


class JsonFormatter(logging.Formatter):
    """One JSON object per record: ``ts``, ``level``, ``logger``, ``message``, ``request_id``
    (inside a request), ``exc`` (a traceback, when there is one) and every ``extra`` field."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        request_id = REQUEST_ID.get()
        if request_id is not None:
            entry["request_id"] = request_id
        entry.update(
            (name, value)
            for name, value in vars(record).items()
            if name not in _STANDARD and not name.startswith("_")
        )
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str, ensure_ascii=False)


class _TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        request_id = REQUEST_ID.get()
        return f"{line} [request {request_id}]" if request_id is not None else line


def configure_logging(log_format: LogFormat, level: int = logging.INFO) -> None:
    """Send the process's log records to stderr in ``log_format`` (once per process: the root
    logger's ragc handler is replaced, others are left alone)."""
    formatter: logging.Formatter
    if log_format == "json":
        formatter = JsonFormatter()
        formatter.converter = time.gmtime
    else:
        formatter = _TextFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    handler = logging.StreamHandler(sys.stderr)
    handler.set_name("ragc")
    handler.setFormatter(formatter)
    root = logging.getLogger()
    for old in [h for h in root.handlers if h.get_name() == "ragc"]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
