"""Talking to Redis for :class:`stores.redis.RedisStore`: store URLs, password redaction,
redis-py errors translated to ragc's, and the pointer-change subscription thread."""

from __future__ import annotations

import functools
import logging
import re
import time
from collections.abc import Callable
from typing import Any, Concatenate, Final, ParamSpec, Protocol, TypeVar
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import redis
from redis.client import PubSub, PubSubWorkerThread

from schemas.errors import RagcError, StoreConfigError, StoreUnavailableError
from schemas.redact import redact

__all__ = ["guarded", "parse_redis_url", "subscribe", "text", "translate"]

logger = logging.getLogger("stores.redis")

_PREFIX_RE: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}\Z")
_START_HINT: Final = (
    "start Redis (e.g. `redis-server --port 6379`) or fix host/port/db in the store URL; "
    "the operation can be retried"
)
_P = ParamSpec("_P")
_R = TypeVar("_R")


class _HasUrl(Protocol):
    url: str


_S = TypeVar("_S", bound=_HasUrl)


def text(value: bytes | str | int | None) -> str:
    """A Redis reply as text (``''`` for nil)."""
    if isinstance(value, bytes):
        return value.decode()
    return "" if value is None else str(value)


def parse_redis_url(url: str) -> tuple[str, str]:
    """Split ``redis[s]://host:port/db?prefix=p`` into the redis-py URL and the key prefix."""
    parts = urlsplit(url)
    if parts.scheme.lower() not in {"redis", "rediss"}:
        raise StoreConfigError(
            f"store URL {redact(url)!r} is not a Redis URL", hint="redis://host:6379/0"
        )
    query = parse_qsl(parts.query, keep_blank_values=True)
    prefix = next((v for k, v in reversed(query) if k == "prefix"), "")
    if prefix and not _PREFIX_RE.match(prefix):
        raise StoreConfigError(
            f"key prefix {prefix!r} in {redact(url)!r} is not valid",
            hint="use 1-128 letters, digits, '.', '_', ':' or '-'",
        )
    rest = urlencode([(k, v) for k, v in query if k != "prefix"])
    return urlunsplit(parts._replace(query=rest)), prefix


def translate(exc: redis.exceptions.RedisError, url: str) -> RagcError:
    """The ragc error for a redis-py error (connection trouble is retryable)."""
    where = f"Redis store at {redact(url)}"
    errors = redis.exceptions
    if isinstance(exc, errors.AuthenticationError | errors.AuthorizationError):
        return StoreConfigError(f"{where} refused the credentials: {exc}")
    transient = (errors.ConnectionError, errors.TimeoutError, errors.ReadOnlyError)
    if isinstance(exc, (*transient, errors.OutOfMemoryError, errors.TryAgainError)):
        return StoreUnavailableError(f"{where} is unavailable: {exc}", hint=_START_HINT)
    return StoreConfigError(
        f"{where} refused a command: {exc}",
        hint="keys under this prefix may not belong to a ragc store; use another ?prefix=",
    )


def guarded(method: Callable[Concatenate[_S, _P], _R]) -> Callable[Concatenate[_S, _P], _R]:
    """Translate redis-py errors raised by a store method into ragc's errors."""

    def wrapper(self: _S, /, *args: _P.args, **kwargs: _P.kwargs) -> _R:
        try:
            return method(self, *args, **kwargs)
        except redis.exceptions.RedisError as exc:
            raise translate(exc, self.url) from exc

    functools.update_wrapper(wrapper, method)
    return wrapper


def subscribe(
    client: redis.Redis, channel: str, callback: Callable[[str], None], url: str
) -> Callable[[], None]:
    """Run ``callback(message)`` for every message on ``channel`` in a daemon thread.

    Returns once the subscription is confirmed (so no later message is missed); the returned
    function stops the thread and closes its connection. redis-py re-subscribes after a lost
    connection; errors are logged and retried every half second.
    """
    pubsub: PubSub = client.pubsub()  # type: ignore[no-untyped-call]

    def handle(message: dict[str, Any]) -> None:
        try:
            callback(text(message.get("data")))
        except Exception:  # a bad callback must not kill the subscriber thread
            logger.exception("pointer-change callback failed")

    def on_error(exc: BaseException, _ps: PubSub, _thread: PubSubWorkerThread) -> None:
        logger.warning("pointer subscription to %s: %s", redact(url), exc)
        time.sleep(0.5)

    pubsub.subscribe(**{channel: handle})
    deadline = time.monotonic() + 5.0
    while time.monotonic() < deadline:
        message = pubsub.get_message(timeout=0.5)
        if message is not None and message.get("type") == "subscribe":
            break
    thread = pubsub.run_in_thread(sleep_time=0.1, daemon=True, exception_handler=on_error)

    def stop() -> None:
        thread.stop()
        thread.join(timeout=2.0)

    return stop
