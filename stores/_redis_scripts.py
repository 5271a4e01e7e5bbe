"""The Lua scripts and plumbing of :class:`stores.redis.RedisStore`.

Each script runs atomically on the Redis server, so a check (is the version ready? is the
stable version still the one the caller saw?) and the write it guards cannot be interleaved
with another client's write. Every script that moves a pointer also PUBLISHes on the pointer
channel, inside the same atomic step, so replicas hear of a flip as soon as it is visible.

Key names are always passed in ``KEYS`` (never built in Lua), so a key prefix applies to all.
Absent values travel as ``''`` and "don't check" as ``'*'`` (neither is a valid version label
or rollout record). The helpers below the scripts name keys, parse store URLs, translate
redis-py errors, rebuild snapshots from rows and run the pointer subscription thread.
"""

from __future__ import annotations

import functools
import logging
import re
import time
from collections.abc import Callable, Sequence
from typing import Any, Concatenate, Final, ParamSpec, Protocol, TypeVar
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import redis
from redis.client import PubSub, PubSubWorkerThread

from schemas.errors import CorruptSnapshotError, RagcError, StoreConfigError, StoreUnavailableError
from schemas.keys import PREFIX, key_kind, pin_key, version_prefix
from schemas.manifest import Snapshot
from stores.base import MANIFEST, assemble_snapshot

__all__ = [
    "BEGIN",
    "FINALIZE",
    "MOVE",
    "PIN",
    "RETIRE",
    "SCRIPTS",
    "SEAL",
    "Keys",
    "assemble",
    "guarded",
    "parse_redis_url",
    "redact",
    "subscribe",
    "text",
    "translate",
    "unlink_namespace",
]

BEGIN: Final = """
-- Reserve a version for loading. KEYS: states, started, versions, seq, active.
-- ARGV: version. Returns {existing state or 'ok', current active ('' for none)}.
local state = redis.call('HGET', KEYS[1], ARGV[1])
local active = redis.call('GET', KEYS[5]) or ''
if state then return {state, active} end
local now = redis.call('TIME')
local n = redis.call('INCR', KEYS[4])
redis.call('ZADD', KEYS[3], n, ARGV[1])
redis.call('HSET', KEYS[1], ARGV[1], 'loading')
redis.call('HSET', KEYS[2], ARGV[1], now[1] .. '.' .. string.format('%06d', now[2]))
return {'ok', active}
"""

SEAL: Final = """
-- Mark a loaded version ready and, when asked, make it stable if the stable version is still
-- the one the publisher saw. KEYS: states, rollout, active, history.
-- ARGV: version, activate ('1'/'0'), expected active, new rollout JSON, channel, message.
-- Returns {'ok' | 'state' | 'conflict', detail}.
local state = redis.call('HGET', KEYS[1], ARGV[1])
if state ~= 'loading' then return {'state', state or ''} end
redis.call('HSET', KEYS[1], ARGV[1], 'ready')
if ARGV[2] ~= '1' then return {'ok', ''} end
local active = redis.call('GET', KEYS[3]) or ''
if active ~= ARGV[3] then return {'conflict', active} end
redis.call('SET', KEYS[2], ARGV[4])
redis.call('SET', KEYS[3], ARGV[1])
redis.call('RPUSH', KEYS[4], ARGV[1])
redis.call('PUBLISH', ARGV[5], ARGV[6])
return {'ok', ''}
"""

MOVE: Final = """
-- Compare-and-set the rollout pointers. KEYS: states, rollout, active, history.
-- ARGV: [1] version that must be ready ('' for none), [2] expected rollout JSON ('*' any,
-- '' absent), [3] expected active ('*' any, '' none), [4] expected history length ('*' any),
-- [5] new rollout JSON, [6] new active ('' keeps it), [7] history op ('push' | 'trim' | ''),
-- [8] last history index to keep (for 'trim'), [9] channel, [10] message.
-- Returns {'ok' | 'missing' | 'conflict', current active}.
local active = redis.call('GET', KEYS[3]) or ''
if ARGV[1] ~= '' and redis.call('HGET', KEYS[1], ARGV[1]) ~= 'ready' then
  return {'missing', active}
end
if ARGV[2] ~= '*' and (redis.call('GET', KEYS[2]) or '') ~= ARGV[2] then
  return {'conflict', active}
end
if ARGV[3] ~= '*' and active ~= ARGV[3] then return {'conflict', active} end
if ARGV[4] ~= '*' and redis.call('LLEN', KEYS[4]) ~= tonumber(ARGV[4]) then
  return {'conflict', active}
end
redis.call('SET', KEYS[2], ARGV[5])
if ARGV[6] ~= '' then redis.call('SET', KEYS[3], ARGV[6]) end
if ARGV[7] == 'push' then redis.call('RPUSH', KEYS[4], ARGV[6]) end
if ARGV[7] == 'trim' then redis.call('LTRIM', KEYS[4], 0, tonumber(ARGV[8])) end
redis.call('PUBLISH', ARGV[9], ARGV[10])
return {'ok', ARGV[6] ~= '' and ARGV[6] or active}
"""

PIN: Final = """
-- Pin a tenant (or unpin it when the version is ''). KEYS: states, pins, the tenant's pin key.
-- ARGV: tenant, version, channel, message. Returns 'ok' or 'missing'.
if ARGV[2] == '' then
  redis.call('HDEL', KEYS[2], ARGV[1])
  redis.call('DEL', KEYS[3])
else
  if redis.call('HGET', KEYS[1], ARGV[2]) ~= 'ready' then return 'missing' end
  redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
  redis.call('SET', KEYS[3], ARGV[2])
end
redis.call('PUBLISH', ARGV[3], ARGV[4])
return 'ok'
"""

RETIRE: Final = """
-- Mark a version 'deleting' if GC may still remove it. KEYS: states, started, rollout, pins,
-- history. ARGV: version, mode ('ready' | 'partial'), cutoff (server time, for partials).
-- A ready version must not be stable, canary or pinned; a partial must still be loading and
-- older than the cutoff. Returns 1 when the version is now 'deleting', else 0.
local state = redis.call('HGET', KEYS[1], ARGV[1])
if state == 'deleting' then return 1 end
if ARGV[2] == 'ready' then
  if state ~= 'ready' then return 0 end
  local raw = redis.call('GET', KEYS[3])
  if raw then
    local rollout = cjson.decode(raw)
    if rollout.stable == ARGV[1] or rollout.canary == ARGV[1] then return 0 end
  end
  for _, pinned in ipairs(redis.call('HVALS', KEYS[4])) do
    if pinned == ARGV[1] then return 0 end
  end
  redis.call('LREM', KEYS[5], 0, ARGV[1])
else
  if state ~= 'loading' then return 0 end
  local started = tonumber(redis.call('HGET', KEYS[2], ARGV[1]) or '0')
  if started > tonumber(ARGV[3]) then return 0 end
end
redis.call('HSET', KEYS[1], ARGV[1], 'deleting')
return 1
"""

FINALIZE: Final = """
-- Forget a version whose namespace is gone. KEYS: states, started, versions. ARGV: version.
if redis.call('HGET', KEYS[1], ARGV[1]) ~= 'deleting' then return 0 end
redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('HDEL', KEYS[2], ARGV[1])
redis.call('ZREM', KEYS[3], ARGV[1])
return 1
"""

SCRIPTS: Final = {
    "BEGIN": BEGIN,
    "SEAL": SEAL,
    "MOVE": MOVE,
    "PIN": PIN,
    "RETIRE": RETIRE,
    "FINALIZE": FINALIZE,
}

# -- helpers ----------------------------------------------------------------------------

logger = logging.getLogger("stores.redis")

_PREFIX_RE: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")
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


def redact(url: str) -> str:
    """``url`` with any password replaced by ``***`` (for messages)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = f"{parts.username or ''}:***@{parts.hostname or ''}"
    netloc += f":{parts.port}" if parts.port else ""
    return urlunsplit(parts._replace(netloc=netloc))


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


class Keys:
    """Every Redis key name the store uses, with the optional prefix applied."""

    def __init__(self, prefix: str) -> None:
        self.p = f"{prefix}:" if prefix else ""
        g = f"{self.p}{PREFIX}:"
        self.versions, self.states, self.started = f"{g}versions", f"{g}states", f"{g}started"
        self.seq, self.pins, self.history = f"{g}seq", f"{g}pins", f"{g}history"
        self.rollout, self.active, self.channel = f"{g}rollout", f"{g}active", f"{g}pointer"
        self.pointer_keys = [self.states, self.rollout, self.active, self.history]

    def ns(self, version: str) -> str:
        """The version's namespace: its rows and its ``_index``/``_manifest``/... keys."""
        return self.p + version_prefix(version)

    def row(self, key: str) -> str:
        return self.p + key

    def pin(self, tenant: str) -> str:
        return self.p + pin_key(tenant)


def assemble(
    version: str,
    rows: Sequence[tuple[str, bytes | None]],
    manifest: bytes,
    fallbacks: bytes,
    blobs: dict[bytes, bytes],
) -> Snapshot:
    """A snapshot rebuilt from its ``(key, payload)`` rows in order, verified."""
    records: list[tuple[str, bytes]] = []
    for key, payload in rows:
        kind = key_kind(key)
        if payload is None or kind is None:
            raise CorruptSnapshotError(
                f"version {version!r}: row {key!r} is missing or misnamed",
                hint="the version was modified in Redis; publish it again as a new version",
            )
        records.append((kind, payload))
    return assemble_snapshot(
        MANIFEST.decode(manifest),
        records,
        fallbacks,
        {text(name): bytes(data) for name, data in blobs.items()},
    )


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


def unlink_namespace(client: redis.Redis, namespace: str, *, batch: int) -> int:
    """UNLINK every key starting with ``namespace`` (SCAN MATCH, never KEYS); the count.

    ``knowledge:pin:tenant_*`` keys are pins, never rows of a version labelled ``pin``, so a
    ``tenant_`` right after the namespace is skipped.
    """
    prefix = namespace.encode()
    found: list[bytes] = []
    removed = 0
    for key in client.scan_iter(match=prefix + b"*", count=batch):
        if not key[len(prefix) :].startswith(b"tenant_"):
            found.append(key)
        if len(found) >= batch:
            removed += int(client.unlink(*found))
            found.clear()
    if found:
        removed += int(client.unlink(*found))
    return removed
