"""The hot-tier snapshot store: Redis, with every record under its contract key.

Layout (``P`` is the optional ``?prefix=`` plus ``:``): rows at ``P knowledge:{v}:...`` exactly as
:meth:`Snapshot.keyed` names them; beside them in the version's namespace ``_index`` (a sorted
set of the row keys in snapshot order), ``_manifest``, ``_fallbacks`` and ``_blobs`` (a hash).
Global keys: ``knowledge:versions`` (sorted set, publish order), ``knowledge:states``
(``loading`` / ``ready`` / ``deleting``), ``knowledge:started``, ``knowledge:seq``,
``knowledge:rollout``, ``knowledge:active``, ``knowledge:pins`` (mirrored to
:func:`schemas.keys.pin_key` keys) and ``knowledge:history``; pointer changes are announced on
the ``knowledge:pointer`` channel.

Publishing reserves the version as ``loading`` (readers only see ``ready`` versions), writes the
rows with pipelined ``MSET``/``ZADD`` batches, then :meth:`RedisStore._seal` reads the version
back, verifies it against its manifest and runs one Lua script that marks it ready and, with a
compare-and-set on the stable version, flips the pointers. All pointer changes are Lua scripts
(see :mod:`stores._redis_lua`), so concurrent writers cannot both win silently.
"""

from __future__ import annotations

import contextlib
import enum
from collections.abc import Callable
from typing import Final

import msgspec
import redis
from redis.client import Pipeline
from redis.typing import EncodableT

from schemas.errors import (
    CorruptSnapshotError,
    ImmutableVersionError,
    PermanentError,
    StoreConfigError,
    StoreUnavailableError,
    VersionNotFoundError,
)
from schemas.keys import key_kind, validate_tenant, validate_version
from schemas.manifest import Manifest, Snapshot
from schemas.records import ExactAnswer, IntentTemplate, TopicBlock
from schemas.rollout import PointerState, RolloutRecord, VersionInfo, with_canary
from stores import _redis_connection as conn
from stores import _redis_layout as layout
from stores._redis_connection import guarded, parse_redis_url, text
from stores._redis_layout import Keys
from stores._redis_lua import SCRIPTS
from stores.base import (
    EXACT,
    INTENT,
    MANIFEST,
    PARTIAL_GRACE_S,
    PARTIAL_HINT,
    ROLLOUT,
    TOPIC,
    GcReport,
    check_percent,
    now_iso,
    plan_gc,
    rollback_target,
    version_info,
)

__all__ = ["UNSET", "RedisStore", "parse_redis_url"]

_BATCH: Final = 1000  # rows per pipelined MSET + ZADD, and keys per MGET / UNLINK
_RETRIES: Final = 20  # optimistic retries of a pointer change that raced another writer


class _Unset(enum.Enum):
    UNSET = enum.auto()


_ANY_TIME: Final = "1e300"
"""A RETIRE cutoff later than any heartbeat."""
CONNECT_TIMEOUT_S: Final = 3.0
SOCKET_TIMEOUT_S: Final = 10.0
"""Longest wait for one reply (a large snapshot's pipeline included)."""

UNSET: Final = _Unset.UNSET
"""``activate(expected=UNSET)``: activate whatever the current stable version is."""


class RedisStore:
    """:class:`stores.base.SnapshotStore` on Redis (``redis://host:port/db[?prefix=p]``)."""

    def __init__(self, url: str, *, client: redis.Redis | None = None) -> None:
        self.url = url
        client_url, prefix = parse_redis_url(url)
        self._owned = client is None
        # Bounded waits (a URL's own socket_timeout=... wins): a Redis that stops answering
        # fails a call in seconds, and the pointer thread is never stuck on a dead socket.
        self._client = client or redis.Redis.from_url(
            client_url,
            decode_responses=False,
            socket_connect_timeout=CONNECT_TIMEOUT_S,
            socket_timeout=SOCKET_TIMEOUT_S,
            health_check_interval=30,
        )
        if self._client.connection_pool.connection_kwargs.get("decode_responses"):
            raise StoreConfigError(
                "the Redis client decodes responses", hint="pass decode_responses=False"
            )
        self._k = Keys(prefix)
        self._subscribers: list[Callable[[], None]] = []
        self._lua = {name: self._client.register_script(body) for name, body in SCRIPTS.items()}
        try:
            self._client.ping()
        except redis.exceptions.RedisError as exc:
            self.close()
            raise conn.translate(exc, url) from exc

    # -- plumbing -----------------------------------------------------------------------

    def _pipe(self) -> Pipeline:
        return self._client.pipeline(transaction=False)

    def _run(self, script: str, keys: list[str], args: list[str | bytes]) -> list[str]:
        """Run one of :data:`SCRIPTS`; its reply as text (one string, or a list)."""
        reply = self._lua[script](keys=keys, args=args)
        return [text(x) for x in reply] if isinstance(reply, list) else [text(reply)]

    def _message(self, event: str, **fields: str | None) -> bytes:
        return msgspec.json.encode({"event": event, **fields})

    # -- publishing ---------------------------------------------------------------------

    @guarded
    def next_version(self) -> str:
        pipe = self._pipe()
        pipe.get(self._k.seq)
        pipe.hkeys(self._k.states)
        seq, names = pipe.execute()
        taken = {text(name) for name in names}
        n = int(seq or 0) + 1
        while f"v{n}" in taken:
            n += 1
        return f"v{n}"

    @guarded
    def publish(self, snapshot: Snapshot, *, activate: bool = False) -> VersionInfo:
        snapshot.verify()
        rows = list(snapshot.keyed())
        version = snapshot.version
        k = self._k
        keys = [k.states, k.started, k.versions, k.seq, k.active]
        state, stable = self._run("BEGIN", keys, [version])
        if state == "ready":
            raise ImmutableVersionError(version)
        if state != "ok":
            raise PermanentError(
                f"a partial load of version {version!r} is in the store ({state})",
                hint=PARTIAL_HINT,
            )
        try:
            self._load(snapshot, rows)
            self._seal(snapshot, len(rows), activate=activate, expected_stable=stable)
        except BaseException:
            # A publisher that fails removes its own partial load (one that is killed leaves
            # it to `gc`, once its heartbeat is old); the active version is untouched.
            with contextlib.suppress(Exception):
                self._abandon(version)
            raise
        return self._info(version)

    def _abandon(self, version: str) -> None:
        """Delete this publisher's load if it is still ``loading`` (never a sealed version)."""
        k = self._k
        keys = [k.states, k.started, k.rollout, k.pins, k.history]
        if self._run("RETIRE", keys, [version, "partial", _ANY_TIME]) == ["1"]:
            self._drop(version)

    def _load(self, snapshot: Snapshot, rows: list[tuple[str, str, bytes]]) -> None:
        """Write every row under the (still ``loading``) version, one round trip per batch."""
        ns = self._k.ns(snapshot.version)
        pipe = self._pipe()
        pipe.set(f"{ns}_manifest", msgspec.json.encode(snapshot.manifest))
        pipe.set(f"{ns}_fallbacks", msgspec.json.encode(snapshot.fallbacks))
        if snapshot.blobs:
            blobs: list[EncodableT] = [x for item in snapshot.blobs.items() for x in item]
            pipe.hset(f"{ns}_blobs", items=blobs)
        beat = self._lua["BEAT"]
        for start in range(0, len(rows), _BATCH):
            batch = rows[start : start + _BATCH]
            pipe.mset({self._k.row(key): data for _, key, data in batch})
            pipe.zadd(f"{ns}_index", {key: start + i for i, (_, key, _) in enumerate(batch)})
            beat(keys=[self._k.states, self._k.started], args=[snapshot.version], client=pipe)
            pipe.execute()
        if len(pipe):
            pipe.execute()

    def _seal(
        self, snapshot: Snapshot, expected: int, *, activate: bool, expected_stable: str
    ) -> None:
        """Read the load back and verify it, then mark it ready and flip: one Lua script."""
        version = snapshot.version
        written = int(self._client.zcard(f"{self._k.ns(version)}_index"))
        if written != expected:
            raise CorruptSnapshotError(
                f"version {version!r}: {written} rows written, {expected} expected",
                hint="the load was interrupted and has been removed; publish again",
            )
        stored = self._read(version, require_ready=False)
        if stored.manifest.checksum != snapshot.manifest.checksum:
            raise CorruptSnapshotError(f"version {version!r} was changed while loading")
        record = msgspec.json.encode(RolloutRecord(stable=version, updated_at=now_iso()))
        args: list[str | bytes] = [version, "1" if activate else "0", expected_stable, record]
        args += [self._k.channel, self._message("activate", version=version)]
        status, found = self._run("SEAL", self._k.pointer_keys, args)
        if status == "state":
            raise PermanentError(
                f"version {version!r} stopped loading before it was sealed ({found or 'gone'})",
                hint="a `ragc gc` may have collected it; publish it again",
            )
        if status == "conflict":
            raise PermanentError(
                f"the active version changed while publishing; retry: {version!r} is published "
                f"but not active (expected {expected_stable or 'none'}, found {found or 'none'})",
                hint=f"check `ragc versions`; `ragc rollout {version} --percent 100` activates it",
            )

    # -- pointers -----------------------------------------------------------------------

    def _move(
        self, new: RolloutRecord, *, ready: str = "", rollout: bytes | str = "*", **kw: str
    ) -> tuple[str, str]:
        """Run the compare-and-set pointer script; ``(status, active)``."""
        args: list[str | bytes] = [ready, rollout, kw.get("active", "*"), kw.get("length", "*")]
        args += [msgspec.json.encode(new), kw.get("new_active", ""), kw.get("op", "")]
        args += [kw.get("keep", "0"), self._k.channel]
        event = kw.get("event", "rollout")
        args.append(self._message(event, version=new.canary or new.stable))
        status, active = self._run("MOVE", self._k.pointer_keys, args)
        return status, active

    @guarded
    def activate(self, version: str, *, expected: str | _Unset | None = UNSET) -> RolloutRecord:
        """Make ``version`` stable; with ``expected``, only if the stable version is still that
        (``None``: only if nothing is active), else :class:`PermanentError`."""
        validate_version(version)
        want = "*" if expected is UNSET else (expected or "")
        record = RolloutRecord(stable=version, updated_at=now_iso())
        status, active = self._move(
            record, ready=version, active=want, new_active=version, op="push", event="activate"
        )
        if status == "missing":
            raise VersionNotFoundError(version)
        if status == "conflict":
            raise PermanentError(
                f"the active version changed while activating {version!r}; retry (expected "
                f"{want or 'none'}, found {active or 'none'})",
                hint="check `ragc versions` and activate again",
            )
        return record

    @guarded
    def rollout(self, version: str, percent: float) -> RolloutRecord:
        percent = check_percent(percent)
        validate_version(version)
        if percent >= 100.0:
            return self.activate(version)
        for _ in range(_RETRIES):
            pipe = self._pipe()
            pipe.get(self._k.rollout)
            pipe.hget(self._k.states, version)
            raw, state = pipe.execute()
            if text(state) != "ready":
                raise VersionNotFoundError(version)
            current = ROLLOUT.decode(raw) if raw else RolloutRecord()
            if current.stable is None:
                raise PermanentError(
                    "no stable version to run a canary against",
                    hint=f"activate a version first: `ragc rollout {version} --percent 100`",
                )
            record = with_canary(current, version, percent)
            record = msgspec.structs.replace(record, updated_at=now_iso())
            status, _ = self._move(record, ready=version, rollout=raw or "")
            if status == "ok":
                return record
        raise StoreUnavailableError("the rollout pointer kept changing; retry the rollout")

    @guarded
    def rollback(self) -> RolloutRecord:
        for _ in range(_RETRIES):
            pipe = self._pipe()
            pipe.get(self._k.rollout)
            pipe.lrange(self._k.history, 0, -1)
            pipe.hgetall(self._k.states)
            raw, history_raw, states = pipe.execute()
            current = ROLLOUT.decode(raw) if raw else RolloutRecord()
            if current.canary is not None:
                record = RolloutRecord(stable=current.stable, updated_at=now_iso())
                status, _ = self._move(record, rollout=raw)
            else:
                history = [text(v) for v in history_raw]
                ready = {text(v) for v, s in states.items() if s == b"ready"}
                target = rollback_target(current, history, ready)
                # Pop the history back to the target so a second rollback goes further back.
                keep = max(i for i, v in enumerate(history) if v == target)
                record = RolloutRecord(stable=target, updated_at=now_iso())
                move = {"length": str(len(history)), "op": "trim", "keep": str(keep)}
                status, _ = self._move(
                    record, ready=target, rollout=raw or "", new_active=target, **move
                )
            if status == "ok":
                return record
        raise StoreUnavailableError("the rollout pointer kept changing; retry the rollback")

    @guarded
    def pin(self, tenant: str, version: str | None) -> None:
        validate_tenant(tenant)
        if version is not None:
            validate_version(version)
        keys = [self._k.states, self._k.pins, self._k.pin(tenant)]
        message = self._message("pin", tenant=tenant, version=version)
        (status,) = self._run("PIN", keys, [tenant, version or "", self._k.channel, message])
        if status == "missing" and version is not None:
            raise VersionNotFoundError(version)

    @guarded
    def pointers(self) -> PointerState:
        pipe = self._pipe()
        pipe.get(self._k.rollout)
        pipe.hgetall(self._k.pins)
        raw, pins = pipe.execute()
        rollout = ROLLOUT.decode(raw) if raw else RolloutRecord()
        return PointerState(rollout=rollout, pins={text(t): text(v) for t, v in pins.items()})

    @guarded
    def active_version(self) -> str | None:
        return text(self._client.get(self._k.active)) or None

    @guarded
    def subscribe_pointer_changes(self, callback: Callable[[str], None]) -> Callable[[], None]:
        """Call ``callback(message_json)`` on every pointer change, from a background thread.

        Returns a function that stops the subscription. Subscribed before this returns, so
        no later flip is missed; on lost connections redis-py re-subscribes.
        """
        stop = conn.subscribe(self._client, self._k.channel, callback, self.url)

        def unsubscribe() -> None:
            stop()
            if unsubscribe in self._subscribers:
                self._subscribers.remove(unsubscribe)

        self._subscribers.append(unsubscribe)
        return unsubscribe

    # -- reading ------------------------------------------------------------------------

    def _info(self, version: str, state: PointerState | None = None) -> VersionInfo:
        return self._infos([version], state)[0]

    def _infos(self, versions: list[str], state: PointerState | None = None) -> list[VersionInfo]:
        state = state or self.pointers()
        raw = self._client.mget([f"{self._k.ns(v)}_manifest" for v in versions]) if versions else []
        infos = []
        for version, data in zip(versions, raw, strict=True):
            if data is None:
                raise VersionNotFoundError(version)
            infos.append(version_info(version, MANIFEST.decode(data), state))
        return infos

    @guarded
    def versions(self) -> list[VersionInfo]:
        state = self.pointers()
        pipe = self._pipe()
        pipe.zrange(self._k.versions, 0, -1)
        pipe.hgetall(self._k.states)
        ordered, states = pipe.execute()
        ready = [text(v) for v in ordered if states.get(v) == b"ready"]
        return self._infos(ready, state)

    @guarded
    def manifest(self, version: str) -> Manifest:
        validate_version(version)
        pipe = self._pipe()
        pipe.hget(self._k.states, version)
        pipe.get(f"{self._k.ns(version)}_manifest")
        state, raw = pipe.execute()
        if state != b"ready" or raw is None:
            raise VersionNotFoundError(version)
        return MANIFEST.decode(raw)

    @guarded
    def load(self, version: str) -> Snapshot:
        validate_version(version)
        return self._read(version, require_ready=True)

    def _read(self, version: str, *, require_ready: bool) -> Snapshot:
        """Every row of ``version`` (in snapshot order), verified against its manifest."""
        ns = self._k.ns(version)
        pipe = self._pipe()
        pipe.hget(self._k.states, version)
        pipe.zrange(f"{ns}_index", 0, -1)
        for suffix in ("_manifest", "_fallbacks"):
            pipe.get(f"{ns}{suffix}")
        pipe.hgetall(f"{ns}_blobs")
        state, members, manifest, fallbacks, blobs = pipe.execute()
        if (require_ready and state != b"ready") or manifest is None or fallbacks is None:
            raise VersionNotFoundError(version)
        keys = [text(m) for m in members]
        for start in range(0, len(keys), _BATCH):
            pipe.mget([self._k.row(key) for key in keys[start : start + _BATCH]])
        payloads = [p for chunk in (pipe.execute() if keys else []) for p in chunk]
        return layout.assemble(
            version, list(zip(keys, payloads, strict=True)), manifest, fallbacks, blobs
        )

    def _payload(self, key: str, kind: str) -> bytes | None:
        """One GET (plus the version's state, same round trip): only ready versions answer."""
        if key_kind(key) != kind:
            return None
        pipe = self._pipe()
        pipe.get(self._k.row(key))
        pipe.hget(self._k.states, key.split(":", 2)[1])
        payload, state = pipe.execute()
        return bytes(payload) if payload is not None and state == b"ready" else None

    @guarded
    def exact(self, key: str) -> ExactAnswer | None:
        return EXACT.decode(raw) if (raw := self._payload(key, "exact")) else None

    @guarded
    def intent(self, key: str) -> IntentTemplate | None:
        return INTENT.decode(raw) if (raw := self._payload(key, "intent")) else None

    @guarded
    def topic(self, key: str) -> TopicBlock | None:
        return TOPIC.decode(raw) if (raw := self._payload(key, "topic")) else None

    # -- collection ---------------------------------------------------------------------

    @guarded
    def gc(self, keep: int, *, partial_grace_s: float = PARTIAL_GRACE_S) -> GcReport:
        state = self.pointers()
        protected = state.in_use
        pipe = self._pipe()
        pipe.zrange(self._k.versions, 0, -1)
        pipe.hgetall(self._k.states)
        pipe.time()
        members, states, (seconds, micros) = pipe.execute()
        ordered = [(text(v), text(states.get(v))) for v in members]
        ready = [v for v, s in ordered if s == "ready"]
        removed, _ = plan_gc(ready, keep, protected)
        cutoff = str(seconds + micros / 1e6 - partial_grace_s)
        k = self._k
        keys = [k.states, k.started, k.rollout, k.pins, k.history]
        removed = tuple(
            v for v in removed if self._run("RETIRE", keys, [v, "ready", cutoff]) == ["1"]
        )
        partial = tuple(
            v
            for v, s in ordered
            if s in {"loading", "deleting"}
            and self._run("RETIRE", keys, [v, "partial", cutoff]) == ["1"]
        )
        for version in (*removed, *partial):
            self._drop(version)
        return GcReport(
            removed=removed,
            kept=tuple(v for v in ready if v not in removed),
            partial_removed=partial,
        )

    def _drop(self, version: str) -> None:
        """UNLINK the version's namespace (SCAN MATCH, never KEYS), then forget the version."""
        layout.unlink_namespace(self._client, self._k.ns(version), batch=_BATCH)
        k = self._k
        self._run("FINALIZE", [k.states, k.started, k.versions], [version])

    def close(self) -> None:
        """Stop pointer subscriptions; close the client only if this store opened it."""
        for stop in list(self._subscribers):
            stop()
        if self._owned:
            self._client.close()
