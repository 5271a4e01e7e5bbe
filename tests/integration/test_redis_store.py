"""RedisStore against a real Redis: crash safety, compare-and-set flips, pub/sub, GC, pipelining.

The backend-neutral behaviour is in ``tests/unit/test_store_contract.py`` (which also runs on
Redis through the ``store`` fixture); these tests check what only Redis has: the key layout, the
Lua compare-and-set, the pointer channel, SCAN-based GC and the number of round trips.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import closing
from typing import Any

import anyio.to_thread
import msgspec
import pytest
import redis
from litestar.testing import AsyncTestClient

from schemas.errors import PermanentError, StoreUnavailableError, VersionNotFoundError
from schemas.keys import ACTIVE_KEY, ROLLOUT_KEY, exact_key, pin_key
from schemas.rollout import RolloutRecord
from serving.app import create_app
from serving.service import AnswerService
from serving.settings import ServeSettings
from stores import open_store
from stores.redis import RedisStore, parse_redis_url
from tests.conftest import REDIS_URL, ROOT, drop_redis_prefix, require_redis
from tests.factories import make_snapshot

pytestmark = pytest.mark.integration

QUESTION = "How long do I have to return a bike?"


@pytest.fixture
def url() -> Iterator[str]:
    """A Redis store URL with a fresh key prefix, cleaned up afterwards."""
    require_redis()
    prefixed = f"{REDIS_URL}?prefix=test-{uuid.uuid4().hex}"
    yield prefixed
    drop_redis_prefix(prefixed)


@pytest.fixture
def client(url: str) -> Iterator[redis.Redis]:
    """A raw client on the test Redis (bytes in, bytes out)."""
    raw = redis.Redis.from_url(parse_redis_url(url)[0], decode_responses=False)
    yield raw
    raw.close()


def _prefix(url: str) -> str:
    return parse_redis_url(url)[1]


def _keys(client: redis.Redis, pattern: str) -> list[bytes]:
    return sorted(client.scan_iter(match=pattern, count=1000))


def test_the_layout_follows_the_key_contract(url: str, client: redis.Redis) -> None:
    p = _prefix(url)
    with closing(RedisStore(url)) as store:
        store.publish(make_snapshot("v1"), activate=True)
        store.pin("acme", "v1")

    assert client.get(f"{p}:{ACTIVE_KEY}") == b"v1"
    rollout = msgspec.json.decode(client.get(f"{p}:{ROLLOUT_KEY}") or b"", type=RolloutRecord)
    assert rollout.stable == "v1"
    assert client.get(f"{p}:{pin_key('acme')}") == b"v1"
    row = client.get(f"{p}:{exact_key('v1', QUESTION)}")
    assert row is not None
    assert b"refund.window" in row
    assert not _keys(client, "knowledge:*")  # nothing escapes the prefix


_DIE_IN_SEAL = textwrap.dedent(
    """
    import os, sys
    from stores import open_store
    from tests.factories import make_snapshot

    store = open_store(sys.argv[1])
    def die(*args, **kwargs):
        os._exit(17)
    type(store)._seal = die
    store.publish(make_snapshot("v2", answer="half-published", extra_exact=300), activate=True)
    """
)


def test_a_killed_publisher_leaves_the_old_version_and_a_collectable_namespace(
    url: str, client: redis.Redis
) -> None:
    p = _prefix(url)
    with closing(RedisStore(url)) as store:
        store.publish(make_snapshot("v1"), activate=True)

    died = subprocess.run([sys.executable, "-c", _DIE_IN_SEAL, url], cwd=ROOT, check=False)
    assert died.returncode == 17

    namespace = f"{p}:knowledge:v2:*"
    assert len(_keys(client, namespace)) > 300  # the half-loaded rows are there ...
    with closing(RedisStore(url)) as store:
        assert store.active_version() == "v1"  # ... but nobody reads them
        assert [v.version for v in store.versions()] == ["v1"]
        assert store.exact(exact_key("v2", QUESTION)) is None
        with pytest.raises(VersionNotFoundError):
            store.pin("acme", "v2")

        report = store.gc(keep=5, partial_grace_s=0)

        assert report.partial_removed == ("v2",)
        assert report.kept == ("v1",)
        assert _keys(client, namespace) == []
        assert client.hget(f"{p}:knowledge:states", "v2") is None
        assert store.active_version() == "v1"
        store.publish(make_snapshot("v2"), activate=True)  # the label is free again
        assert store.active_version() == "v2"


def test_concurrent_activations_with_a_stale_expectation_have_one_winner(url: str) -> None:
    with closing(RedisStore(url)) as setup:
        setup.publish(make_snapshot("v1"), activate=True)
        setup.publish(make_snapshot("v2"))
        setup.publish(make_snapshot("v3"))
    barrier = threading.Barrier(2)
    outcomes: dict[str, Any] = {}

    def activate(version: str) -> None:
        with closing(RedisStore(url)) as store:
            expected = store.active_version()  # both read v1 ...
            barrier.wait()
            try:  # ... and both try to move from it
                outcomes[version] = store.activate(version, expected=expected)
            except PermanentError as exc:
                outcomes[version] = exc

    threads = [threading.Thread(target=activate, args=(v,)) for v in ("v2", "v3")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)

    winners = [v for v, o in outcomes.items() if isinstance(o, RolloutRecord)]
    losers = [o for o in outcomes.values() if isinstance(o, PermanentError)]
    assert len(winners) == 1
    assert len(losers) == 1
    assert "active version changed" in str(losers[0])
    with closing(RedisStore(url)) as store:
        assert store.active_version() == winners[0]
        assert store.rollback().stable == "v1"  # the loser never entered the history


def test_concurrent_publishers_cannot_both_flip(url: str) -> None:
    with closing(RedisStore(url)) as setup:
        setup.publish(make_snapshot("v1"), activate=True)
    barrier = threading.Barrier(2)
    outcomes: dict[str, BaseException | None] = {}

    def publish(version: str) -> None:
        with closing(RedisStore(url)) as store:
            seal = store._seal

            def paused(*args: Any, **kwargs: Any) -> None:
                barrier.wait()  # both loaded against v1; now both try to flip
                seal(*args, **kwargs)

            store._seal = paused  # type: ignore[method-assign]
            try:
                store.publish(make_snapshot(version), activate=True)
                outcomes[version] = None
            except PermanentError as exc:
                outcomes[version] = exc

    threads = [threading.Thread(target=publish, args=(v,)) for v in ("v2", "v3")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)

    assert sorted(outcomes) == ["v2", "v3"]
    errors = [e for e in outcomes.values() if e is not None]
    assert len(errors) == 1
    assert "the active version changed while publishing; retry" in str(errors[0])
    winner = next(v for v, e in outcomes.items() if e is None)
    with closing(RedisStore(url)) as store:
        assert store.active_version() == winner
        listed = {v.version: v.active for v in store.versions()}  # the loser: ready, inactive
        assert listed == {"v1": False, "v2": winner == "v2", "v3": winner == "v3"}


def test_a_subscriber_hears_a_flip_within_a_second(url: str) -> None:
    heard: list[str] = []
    event = threading.Event()

    def on_change(message: str) -> None:
        heard.append(message)
        event.set()

    with closing(RedisStore(url)) as replica, closing(RedisStore(url)) as admin:
        admin.publish(make_snapshot("v1"))
        stop = replica.subscribe_pointer_changes(on_change)
        started = time.monotonic()
        admin.activate("v1")
        assert event.wait(1.0), "no pointer message within a second"
        assert time.monotonic() - started < 1.0
        assert msgspec.json.decode(heard[0]) == {"event": "activate", "version": "v1"}
        assert replica.active_version() == "v1"
        stop()
        event.clear()
        admin.pin("acme", "v1")
        assert not event.wait(0.3)  # stopped means stopped


def test_gc_never_uses_keys(url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    raw = redis.Redis.from_url(parse_redis_url(url)[0], decode_responses=False)
    original: Callable[..., Any] = raw.execute_command

    def no_keys(*args: Any, **options: Any) -> Any:
        assert str(args[0]).upper() != "KEYS", "GC must SCAN, never KEYS"
        return original(*args, **options)

    def forbidden(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("GC must SCAN, never KEYS")

    monkeypatch.setattr(raw, "execute_command", no_keys)
    monkeypatch.setattr(raw, "keys", forbidden)
    store = RedisStore(url, client=raw)
    for version in ("v1", "v2", "v3"):
        store.publish(make_snapshot(version, extra_exact=50), activate=True)

    report = store.gc(keep=1)

    assert report.removed == ("v1", "v2")
    assert _keys(raw, f"{_prefix(url)}:knowledge:v1:*") == []
    store.close()
    assert raw.ping()  # an injected client stays open
    raw.close()


def test_a_large_snapshot_publishes_in_few_round_trips(
    url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    snapshot = make_snapshot("v1", extra_exact=4999)
    rows = len(list(snapshot.keyed()))
    store = RedisStore(url)
    sent = 0
    original: Callable[..., None] = redis.connection.AbstractConnection.send_packed_command

    def counting(self: Any, command: Any, check_health: bool = True) -> None:
        nonlocal sent
        sent += 1
        original(self, command, check_health)

    monkeypatch.setattr(redis.connection.AbstractConnection, "send_packed_command", counting)
    store.publish(snapshot, activate=True)
    monkeypatch.undo()

    assert rows > 5000
    assert sent <= 20, f"{sent} round trips for {rows} rows: the load is not pipelined"
    assert len(store.load("v1").exact) == 5000
    store.close()


def test_an_unreachable_redis_is_a_retryable_error_naming_the_url() -> None:
    with pytest.raises(StoreUnavailableError, match=r"redis://127\.0\.0\.1:1/0") as caught:
        open_store("redis://127.0.0.1:1/0")
    assert "redis-server" in str(caught.value)


async def test_a_replica_keeps_answering_when_its_redis_loses_every_key(url: str) -> None:
    """A flushed (or restarted, empty) Redis: the replica answers from the versions it loaded,
    reports degraded readiness, and is ready again once a version is published again."""
    store = open_store(url)
    store.publish(make_snapshot("v1"), activate=True)
    settings = ServeSettings(store=url, pointer_poll_s=0.02, audit=False)
    async with AsyncTestClient(create_app(settings)) as http:
        assert (await http.get("/readyz")).json()["status"] == "ready"
        drop_redis_prefix(url)  # every key of this store, gone
        service: AnswerService = http.app.state.service
        await anyio.to_thread.run_sync(service.pointers.refresh)
        ready = await http.get("/readyz")
        answer = await http.post("/v1/answer", json={"question": QUESTION})
        assert (ready.status_code, ready.json()["status"]) == (200, "degraded")
        assert "lost its version pointers" in ready.json()["detail"]
        assert (answer.status_code, answer.json()["version"]) == (200, "v1")

        store.publish(make_snapshot("v2"), activate=True)
        await anyio.to_thread.run_sync(service.pointers.refresh)
        ready = await http.get("/readyz")
        assert (ready.json()["status"], ready.json()["version"]) == ("ready", "v2")
        assert (await http.post("/v1/answer", json={"question": QUESTION})).json()[
            "version"
        ] == "v2"
    store.close()
