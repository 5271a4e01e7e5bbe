"""The one place where errors become HTTP responses (no stack trace ever reaches a client)."""

from __future__ import annotations

import logging
from typing import Any, Final

from litestar import MediaType, Request, Response
from litestar.exceptions import HTTPException, SerializationException, ValidationException
from litestar.status_codes import (
    HTTP_400_BAD_REQUEST,
    HTTP_401_UNAUTHORIZED,
    HTTP_403_FORBIDDEN,
    HTTP_404_NOT_FOUND,
    HTTP_408_REQUEST_TIMEOUT,
    HTTP_409_CONFLICT,
    HTTP_500_INTERNAL_SERVER_ERROR,
    HTTP_503_SERVICE_UNAVAILABLE,
)

from schemas.errors import (
    InvalidInputError,
    PermanentError,
    RagcError,
    RetryableError,
    VersionNotFoundError,
)
from serving.dto import ErrorBody
from serving.tenants import TenantCredentialsError, TenantForbiddenError

__all__ = ["BodyTimeoutError", "NotReadyError", "exception_handlers"]

logger = logging.getLogger(__name__)


class NotReadyError(RetryableError):
    """No version is active yet, so there is nothing to answer from."""

    def __init__(self) -> None:
        super().__init__(
            "no knowledge version is active yet",
            hint="publish one: `ragc compile DIR --publish` or `ragc rollout VERSION`",
        )


class BodyTimeoutError(PermanentError):
    """The request body did not arrive in time (HTTP 408; the connection is closed)."""

    def __init__(self, seconds: float) -> None:
        super().__init__(
            f"the request body did not arrive within {seconds:g} s",
            hint="send the whole body at once, with a Content-Length that matches it",
        )


_STATUSES: Final[tuple[tuple[type[RagcError], int], ...]] = (
    (InvalidInputError, HTTP_400_BAD_REQUEST),
    (BodyTimeoutError, HTTP_408_REQUEST_TIMEOUT),
    (TenantCredentialsError, HTTP_401_UNAUTHORIZED),
    (TenantForbiddenError, HTTP_403_FORBIDDEN),
    (VersionNotFoundError, HTTP_404_NOT_FOUND),
    (RetryableError, HTTP_503_SERVICE_UNAVAILABLE),
)
"""The first matching class gives the status; any other ragc error (an immutable version, a
failed gate) is a conflict with the current state."""


def _status(exc: RagcError) -> int:
    return next((code for kind, code in _STATUSES if isinstance(exc, kind)), HTTP_409_CONFLICT)


def _ragc_error(_: Request[Any, Any, Any], exc: RagcError) -> Response[ErrorBody]:
    status = _status(exc)
    return Response(
        ErrorBody(status_code=status, detail=exc.message, hint=exc.hint),
        status_code=status,
        media_type=MediaType.JSON,
        # the rest of a body that never came must not be read as the next request
        headers={"connection": "close"} if isinstance(exc, BodyTimeoutError) else None,
    )


BODY_HINT: Final = (
    "the request bodies are described in the OpenAPI document at /schema/openapi.json"
)


_HINTS: Final[dict[int, str]] = {
    HTTP_400_BAD_REQUEST: BODY_HINT,
    401: "send the credential the detail names",
    403: "the detail says what enables this route",
    404: "the routes are listed in the OpenAPI document at /schema/openapi.json",
    405: "the routes and their methods are listed in the OpenAPI document at /schema/openapi.json",
    413: "send at most 1 MiB; split a large batch into several requests",
    415: "send the body as application/json",
}
"""Hints of the framework's own errors (a ragc error brings its own)."""


def _http_error(_: Request[Any, Any, Any], exc: HTTPException) -> Response[ErrorBody]:
    detail = exc.detail
    if isinstance(exc, ValidationException) and exc.extra:
        problems = exc.extra if isinstance(exc.extra, list) else [exc.extra]
        detail = f"{exc.detail}: " + "; ".join(_problem(p) for p in problems)
    if isinstance(exc.__cause__, SerializationException):  # the body did not decode as JSON
        detail = f"the request body is not valid JSON: {exc.detail}"
    hint = _HINTS.get(exc.status_code)
    return Response(
        ErrorBody(status_code=exc.status_code, detail=detail, hint=hint),
        status_code=exc.status_code,
        media_type=MediaType.JSON,
        headers=exc.headers,
    )


def _problem(problem: object) -> str:
    """One validation problem as ``message (at field)``."""
    if not isinstance(problem, dict):
        return str(problem)
    message = str(problem.get("message", problem))
    key = problem.get("key")
    return f"{message} (in {key})" if key and key != "data" else message


def _bad_encoding(_: Request[Any, Any, Any], exc: UnicodeDecodeError) -> Response[ErrorBody]:
    return Response(
        ErrorBody(
            status_code=HTTP_400_BAD_REQUEST,
            detail=f"the request body is not valid UTF-8 (byte {exc.start})",
            hint="send JSON encoded as UTF-8",
        ),
        status_code=HTTP_400_BAD_REQUEST,
        media_type=MediaType.JSON,
    )


def _unexpected(_: Request[Any, Any, Any], exc: Exception) -> Response[ErrorBody]:
    logger.exception("unexpected error", exc_info=exc)
    return Response(
        ErrorBody(status_code=HTTP_500_INTERNAL_SERVER_ERROR, detail="internal error"),
        status_code=HTTP_500_INTERNAL_SERVER_ERROR,
        media_type=MediaType.JSON,
    )


exception_handlers = {
    UnicodeDecodeError: _bad_encoding,
    RagcError: _ragc_error,
    HTTPException: _http_error,
    Exception: _unexpected,
}
