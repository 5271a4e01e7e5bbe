"""Dependency providers and guards shared by the controllers."""

from __future__ import annotations

import hmac
import re
from typing import Any, Final

import msgspec
from litestar import Request
from litestar.connection import ASGIConnection
from litestar.datastructures import State
from litestar.exceptions import NotAuthorizedException, PermissionDeniedException
from litestar.handlers.base import BaseRouteHandler

from schemas.errors import InvalidInputError
from serving.deadlines import ReadDeadlines
from serving.dispatch import Dispatcher
from serving.service import AnswerService
from serving.settings import ServeSettings

__all__ = [
    "admin_guard",
    "bounded_body",
    "provide_dispatcher",
    "provide_service",
    "provide_settings",
    "read_body",
    "strict_body",
]

MAX_JSON_DEPTH: Final = 32
"""Deepest nesting of arrays and objects a request body may have (a request is flat: two
or three levels; a decoder recursing a thousand levels deep fails with a 500)."""

_JSON_STRING: Final = re.compile(rb'"(?:[^"\\]|\\.)*"')
_JSON_BRACKET: Final = re.compile(rb"[\[\]{}]")
_LONE_SURROGATE: Final = re.compile(
    rb"(?<!\\)\\u[dD][89abAB][0-9a-fA-F]{2}(?!\\u[dD][c-fC-F][0-9a-fA-F]{2})"
    rb"|(?<![0-9a-fA-F]{2})(?<!\\)\\u[dD][c-fC-F][0-9a-fA-F]{2}"
)
"""A ``\\uD800``-``\\uDFFF`` escape that is not half of a surrogate pair: no character."""


def provide_service(state: State) -> AnswerService:
    """The process's :class:`AnswerService` (built in the lifespan)."""
    service: AnswerService = state.service
    return service


def provide_settings(state: State) -> ServeSettings:
    settings: ServeSettings = state.settings
    return settings


def provide_dispatcher(state: State) -> Dispatcher:
    """The webhook's :class:`Dispatcher` (opened in the lifespan when the webhook is enabled)."""
    dispatcher: Dispatcher | None = state.get("dispatcher")
    if dispatcher is None:
        raise PermissionDeniedException(
            "the knowledge-changed webhook is disabled: set RAGC_WEBHOOK_SECRET to enable it"
        )
    return dispatcher


def admin_guard(connection: ASGIConnection[Any, Any, Any, Any], handler: BaseRouteHandler) -> None:
    """Admit only ``Authorization: Bearer $RAGC_ADMIN_TOKEN``."""
    settings: ServeSettings = connection.app.state.settings
    if not settings.admin_token:
        raise PermissionDeniedException("the admin API is disabled: set RAGC_ADMIN_TOKEN to use it")
    del handler
    scheme, _, token = connection.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(
        token.strip().encode(), settings.admin_token.encode()
    ):
        raise NotAuthorizedException(
            "admin credentials required: send Authorization: Bearer <RAGC_ADMIN_TOKEN>",
            headers={"WWW-Authenticate": "Bearer"},
        )


def json_depth_exceeds(body: bytes, limit: int = MAX_JSON_DEPTH) -> bool:
    """Whether ``body`` nests arrays and objects deeper than ``limit`` (brackets inside
    strings do not count). Cheap: a body with no more brackets than ``limit`` is not scanned."""
    if body.count(b"[") + body.count(b"{") <= limit:
        return False
    depth = 0
    for match in _JSON_BRACKET.finditer(_JSON_STRING.sub(b"", body)):
        if match[0] in (b"[", b"{"):
            depth += 1
            if depth > limit:
                return True
        else:
            depth -= 1
    return False


def _shape(annotation: Any) -> str:
    """A JSON object with the required fields of ``annotation`` (a msgspec struct)."""
    if not isinstance(annotation, type) or not issubclass(annotation, msgspec.Struct):
        return "a JSON body"
    required = [f.encode_name for f in msgspec.structs.fields(annotation) if f.required]
    return "{" + ", ".join(f'"{name}": ...' for name in required) + "}"


async def read_body(request: Request[Any, Any, Any]) -> bytes:
    """The request body, or :class:`~serving.errors.BodyTimeoutError` (408) when it has not
    arrived within ``RAGC_BODY_TIMEOUT_S``."""
    deadlines: ReadDeadlines | None = request.app.state.get("deadlines")
    if deadlines is None:
        return await request.body()
    return await deadlines.within(request.body())


async def bounded_body(request: Request[Any, Any, Any]) -> None:
    """Refuse, before anything decodes it, a body that does not arrive in time (408), is empty
    where one is needed, nests
    deeper than :data:`MAX_JSON_DEPTH`, or escapes half a surrogate pair, each with a message
    that says so (the decoders would say ``'data'``, fail with a RecursionError, or report
    "Input data was truncated")."""
    if request.method in ("GET", "HEAD", "OPTIONS"):
        return
    body = await read_body(request)
    field = request.route_handler.parsed_fn_signature.parameters.get("data")
    if field is not None and not body.strip():
        raise InvalidInputError(
            "the request body is empty", hint=f"send {_shape(field.annotation)} as JSON"
        )
    if json_depth_exceeds(body):
        raise InvalidInputError(
            f"the request body nests arrays or objects more than {MAX_JSON_DEPTH} levels deep",
            hint="send the documented flat shape: slot values are strings, numbers or booleans",
        )
    lone = _LONE_SURROGATE.search(body) if b"\\u" in body else None
    if lone is not None:
        raise InvalidInputError(
            f"the request body escapes half a UTF-16 surrogate pair "
            f"({lone[0].decode('ascii')} at byte {lone.start()}), which is no character",
            hint="send text as UTF-8, or escape a character beyond U+FFFF as a full pair "
            "such as \\ud83d\\ude00",
        )


async def strict_body(request: Request[Any, Any, Any]) -> None:
    """Refuse a JSON body that fits its handler's ``data`` type only after coercion.

    Litestar converts request data leniently (``{"percent": "5"}`` would become ``5``), right
    for query strings, wrong for an admin body, where a quoted number is a client's mistake.
    The body is decoded once more, strictly, before the handler runs (malformed JSON is left
    to Litestar's own error).
    """
    await bounded_body(request)  # a route's hook replaces the app's: keep its bound
    field = request.route_handler.parsed_fn_signature.parameters.get("data")
    if field is None:
        return
    try:
        msgspec.json.decode(await request.body(), type=field.annotation)
    except msgspec.ValidationError as exc:
        raise InvalidInputError(
            f"the request body does not fit {field.annotation.__name__}: {exc}",
            hint="send numbers as JSON numbers and text as JSON strings, with no other fields",
        ) from exc
    except msgspec.DecodeError:
        return
