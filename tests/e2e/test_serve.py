"""The answer service end to end: compiled examples, served by the Litestar app, asked over HTTP."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient

from providers import OfflineProvider
from serving.app import create_app
from serving.dto import MAX_BATCH
from serving.service import AnswerService
from serving.settings import ServeSettings
from stores import open_store
from stores.tenant_keys import SqliteTenantKeys
from tests.conftest import EXAMPLES
from tests.e2e.conftest import Compiled

Client = AsyncTestClient[Litestar]
ConcurrentClient = httpx.AsyncClient
"""Through ``httpx.ASGITransport`` on the test's loop: AsyncTestClient runs one request at a
time, this one runs them concurrently, as a server does."""

pytestmark = [pytest.mark.e2e]

BASE = "http://testserver.local"
ADMIN = {"Authorization": "Bearer admin-secret"}
L1 = "What's your return window?"
L2 = "how long does the 500 wh battery take to charge from empty"
L3 = "charging the battery in cold weather"
OFF_TOPIC = "who won the world cup in 1998"


@pytest.fixture
def store_url(compiled: Compiled, tmp_path: Path) -> str:
    """A private copy of the compiled store (tests move its pointers)."""
    copy = tmp_path / "knowledge.db"
    source = sqlite3.connect(compiled.root / "knowledge.db")
    target = sqlite3.connect(copy)
    source.backup(target)
    source.close()
    target.close()
    return f"sqlite:///{copy}"


def settings(url: str, **changes: object) -> ServeSettings:
    base = ServeSettings(store=url, admin_token="admin-secret", pointer_poll_s=0.05)
    return ServeSettings(**{**{f: getattr(base, f) for f in base.__struct_fields__}, **changes})


@pytest.fixture
def acme(store_url: str) -> dict[str, str]:
    """Headers that speak for tenant ``acme``: its API key, issued in the store's file."""
    keys = SqliteTenantKeys(store_url)
    try:
        return {"X-API-Key": keys.issue("acme", label="tests").key}
    finally:
        keys.close()


@pytest.fixture
async def client(store_url: str, acme: dict[str, str]) -> AsyncIterator[Client]:
    """The service over a private store in which ``acme`` has a key (issued before it starts)."""
    del acme
    async with AsyncTestClient(create_app(settings(store_url))) as test_client:
        yield test_client


async def ask(
    client: Client | ConcurrentClient,
    question: str,
    headers: dict[str, str] | None = None,
    **fields: object,
) -> dict[str, Any]:
    response = await client.post(
        "/v1/answer", json={"question": question, **fields}, headers=headers
    )
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


async def test_each_layer_answers_with_its_entry_and_sources(client: Client) -> None:
    exact = await ask(client, L1)
    routed = await ask(client, L2)
    composed = await ask(client, L3)

    assert (exact["layer"], exact["entry_id"]) == ("L1", "refund.window")
    assert exact["sources"] == [
        {
            "doc_id": "faq",
            "path": "faq.jsonl",
            "section": "How long do I have to return my order?",
            "anchor": "refund.window",
        }
    ]
    assert exact["cache_key"].startswith(f"knowledge:{exact['version']}:en:exact:")
    assert (routed["layer"], routed["entry_id"]) == ("L2", "battery.charging_time")
    assert routed["cache_key"] == f"knowledge:{routed['version']}:en:intent:battery.charging_time"
    assert composed["layer"] == "L3"
    assert composed["entry_id"] is None
    assert ("charging", "Charging safely") in {
        (s["doc_id"], s["section"]) for s in composed["sources"]
    }
    assert "temperature" in composed["answer"].lower()
    for body in (exact, routed, composed):
        assert set(body) >= {
            "answer",
            "layer",
            "entry_id",
            "sources",
            "version",
            "cache_key",
            "confidence",
            "latency_ms",
        }


async def test_an_unrelated_question_gets_safe_and_lands_in_the_miss_log(
    client: Client, acme: dict[str, str]
) -> None:
    first = await ask(client, OFF_TOPIC)
    await ask(client, OFF_TOPIC.upper() + "?", acme)

    assert first["layer"] == "SAFE"
    assert first["sources"] == []
    assert first["cache_key"] is None
    misses = (await client.get("/v1/misses", headers=ADMIN)).json()
    top = misses["misses"][0]
    assert (top["normalized"], top["count"], top["tenants"]) == (
        "who won the world cup in 1998",
        2,
        ["acme"],
    )
    assert misses["suggestions"][0]["normalized"] == top["normalized"]


async def test_batch_answers_in_order(client: Client) -> None:
    response = await client.post(
        "/v1/answer/batch", json={"questions": [{"question": q} for q in (L1, L2, OFF_TOPIC)]}
    )
    assert response.status_code == 200
    assert [a["layer"] for a in response.json()["answers"]] == ["L1", "L2", "SAFE"]


@pytest.mark.parametrize(
    ("body", "status", "says"),
    [
        ({"question": ""}, 400, "length >= 1"),
        ({"question": "x" * 100_000}, 400, "length <= 2000"),
        ({"question": 42}, 400, "Expected `str`, got `int`"),
        ({"question": "hi", "tenant": "Not A Tenant"}, 400, "tenant id"),
        ({"question": "hi", "language": "klingon"}, 400, "BCP 47"),
        ({"question": "hi", "slots": {"a": [1, 2]}}, 400, "Expected"),
        ({"question": "hi", "extra": True}, 400, "unknown field"),
        ({"questions": []}, 400, "question"),
    ],
)
async def test_bad_input_gets_a_clear_4xx_and_the_server_keeps_serving(
    client: Client,
    body: dict[str, Any],
    status: int,
    says: str,
) -> None:
    response = await client.post("/v1/answer", json=body)

    assert response.status_code == status
    assert says in response.json()["detail"]
    assert (await ask(client, L1))["layer"] == "L1"


@pytest.mark.parametrize(
    ("content", "says"),
    [
        (b'{"question": "caf\xe9"}', "not valid UTF-8"),
        (b'{"question": ', "truncated"),
        (b"x" * (2 * 1024 * 1024), "Request Entity Too Large"),
    ],
)
async def test_broken_bodies_are_refused(
    client: Client,
    content: bytes,
    says: str,
) -> None:
    response = await client.post(
        "/v1/answer", content=content, headers={"content-type": "application/json"}
    )
    assert 400 <= response.status_code < 500
    assert says.lower() in response.text.lower()
    assert (await ask(client, L1))["layer"] == "L1"


@pytest.mark.parametrize("question", [L1, L2, L3, OFF_TOPIC])
async def test_the_fast_path_answers_exactly_as_the_handler_does(
    client: Client, question: str, acme: dict[str, str]
) -> None:
    """A plain JSON POST takes the route middleware; a session header sends it through the
    controller's handler. Both give the same body (the measured latency aside)."""
    body = {"question": question, "tenant": "acme"}
    fast = await client.post("/v1/answer", json=body, headers=acme)
    handled = await client.post("/v1/answer", json=body, headers={"X-Session-Id": "s-1", **acme})
    form = await client.post(
        "/v1/answer",
        content=json.dumps(body).encode(),
        headers={"content-type": "application/json; charset=utf-8", **acme},
    )
    assert fast.status_code == handled.status_code == form.status_code == 200
    assert fast.headers["content-type"] == handled.headers["content-type"]
    assert fast.headers["content-type"].startswith("application/json")
    bodies = [r.json() for r in (fast, handled, form)]
    for answer in bodies:
        assert answer.pop("latency_ms") >= 0
    assert bodies[0] == bodies[1] == bodies[2]


async def test_the_fast_path_counts_and_audits_like_the_handler(client: Client) -> None:
    before = (await client.get("/metrics")).text
    await ask(client, OFF_TOPIC)  # fast path
    after = (await client.get("/metrics")).text

    def safe_count(text: str) -> float:
        for line in text.splitlines():
            if line.startswith('ragc_answers_total{layer="SAFE"}'):
                return float(line.split()[-1])
        return 0.0

    assert safe_count(after) == safe_count(before) + 1


async def test_a_non_json_body_goes_to_the_handler(client: Client) -> None:
    response = await client.post(
        "/v1/answer", content=b"question=hi", headers={"content-type": "text/plain"}
    )
    assert 400 <= response.status_code < 500
    assert (await ask(client, L1))["layer"] == "L1"


async def test_health_readiness_metrics_and_openapi(client: Client) -> None:
    await ask(client, L1)
    await ask(client, OFF_TOPIC)

    assert (await client.get("/healthz")).json() == {
        "status": "ok",
        "version": None,
        "canary": None,
        "detail": None,
    }
    ready = await client.get("/readyz")
    assert (ready.status_code, ready.json()["status"]) == (200, "ready")
    scraped = await client.get("/metrics", headers={"X-Request-Id": "scrape-1"})
    metrics = scraped.text
    assert scraped.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    assert scraped.headers["x-request-id"] == "scrape-1"
    assert 'ragc_answers_total{layer="L1"} 1.0' in metrics
    assert "ragc_audit_dropped_total 0.0" in metrics
    assert "ragc_misses_total 1.0" in metrics
    assert f'ragc_active_version{{version="{ready.json()["version"]}"}} 1.0' in metrics
    assert "ragc_pointers_degraded 0.0" in metrics
    assert 'ragc_http_requests_total{method="POST",route="/v1/answer",status="200"} 2.0' in metrics
    assert 'ragc_http_request_duration_seconds_count{route="/v1/answer"} 2.0' in metrics
    assert "process_resident_memory_bytes" in metrics
    drawn = (await client.get("/healthz", headers={"X-Request-Id": "bad id\n"})).headers
    assert len(drawn["x-request-id"]) == 16  # not a plain token: one of ours instead
    paths = (await client.get("/schema/openapi.json")).json()["paths"]
    assert {"/v1/answer", "/v1/answer/batch", "/v1/admin/rollout", "/v1/misses"} <= set(paths)


async def test_not_ready_without_an_active_version(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'empty.db'}"
    async with AsyncTestClient(create_app(settings(url))) as client:
        assert (await client.get("/readyz")).status_code == 503
        response = await client.post("/v1/answer", json={"question": L1})
        assert response.status_code == 503
        assert "no knowledge version is active" in response.json()["detail"]


async def test_admin_routes_need_the_credential(client: Client, store_url: str) -> None:
    assert (await client.get("/v1/admin/versions")).status_code == 401
    wrong = {"Authorization": "Bearer guess"}
    assert (await client.post("/v1/admin/rollback", headers=wrong)).status_code == 401
    listed = (await client.get("/v1/admin/versions", headers=ADMIN)).json()["versions"]
    assert [v["version"] for v in listed] == ["v1", "v2"]
    async with AsyncTestClient(create_app(settings(store_url, admin_token=None))) as closed:
        response = await closed.get("/v1/admin/versions", headers=ADMIN)
        assert response.status_code == 403
        assert "RAGC_ADMIN_TOKEN" in response.json()["detail"]


LAX_ADMIN_BODIES: list[tuple[str, dict[str, object]]] = [
    ("/v1/admin/rollout", {"version": "v1", "percent": "5"}),
    ("/v1/admin/rollout", {"version": 1}),
    ("/v1/admin/pins", {"tenant": "acme", "version": 2}),
    ("/v1/admin/gc", {"keep": "3"}),
    ("/v1/admin/gc", {"keep": True}),
]


async def test_admin_bodies_are_typed_strictly(client: Client) -> None:
    for path, body in LAX_ADMIN_BODIES:
        response = await client.post(path, json=body, headers=ADMIN)
        assert response.status_code == 400, (path, body, response.text)
        assert response.json()["hint"], (path, body)
    listed = (await client.get("/v1/admin/versions", headers=ADMIN)).json()["versions"]
    assert [v["version"] for v in listed] == ["v1", "v2"]  # nothing collected
    assert not any(v["canary"] for v in listed)  # no canary started


async def test_a_deeply_nested_body_is_a_400_and_the_service_answers_on(client: Client) -> None:
    body = '{"question": "hi", "slots": {"a": ' + "[" * 1000 + "]" * 1000 + "}}"
    for path in ("/v1/answer", "/v1/answer/batch", "/v1/admin/rollout"):
        response = await client.post(
            path, content=body, headers={"content-type": "application/json", **ADMIN}
        )
        assert response.status_code == 400, (path, response.text)
        assert "levels deep" in response.json()["detail"]
        assert response.json()["hint"]
    assert (await ask(client, L1))["layer"] == "L1"


BAD_BODIES: list[tuple[bytes, str, str]] = [
    (b"", "the request body is empty", '"question"'),
    (b"  ", "the request body is empty", '"question"'),
    (b'{"question": "\\ud800 hi"}', "half a UTF-16 surrogate pair", "full pair"),
    (b'{"question": "hi \\udc00"}', "half a UTF-16 surrogate pair", "full pair"),
    (b'{"question":', "not valid JSON", "openapi.json"),
    (b"null", "Expected `object`", "openapi.json"),
]


async def test_a_bad_body_is_named_with_its_fix(client: Client) -> None:
    for body, detail, hint in BAD_BODIES:
        response = await client.post(
            "/v1/answer", content=body, headers={"content-type": "application/json"}
        )
        assert response.status_code == 400, (body, response.text)
        assert detail in response.json()["detail"], body
        assert hint in response.json()["hint"], body


async def test_a_body_that_stops_arriving_gets_a_408_on_either_path(store_url: str) -> None:
    app = create_app(settings(store_url, body_timeout_s=0.2))

    async def half_a_body() -> AsyncIterator[bytes]:
        yield b'{"question": "What'
        await asyncio.Event().wait()  # and the rest never comes

    transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]  # Litestar is ASGI
    async with app.lifespan(), ConcurrentClient(transport=transport, base_url=BASE) as client:
        json_type = {"content-type": "application/json"}
        fast = await client.post("/v1/answer", content=half_a_body(), headers=json_type)
        handled = await client.post(
            "/v1/answer", content=half_a_body(), headers={**json_type, "X-Session-Id": "s"}
        )
        after = await client.post("/v1/answer", json={"question": L1})
    for response in (fast, handled):
        assert response.status_code == 408, response.text
        assert response.headers["connection"] == "close"
        assert "did not arrive within 0.2 s" in response.json()["detail"]
    assert after.json()["layer"] == "L1"


async def test_a_surrogate_pair_escape_is_a_character(client: Client) -> None:
    body = b'{"question": "What\'s your return window? \\ud83d\\ude00"}'
    response = await client.post(
        "/v1/answer", content=body, headers={"content-type": "application/json"}
    )
    assert response.status_code == 200, response.text


async def _versions_seen(
    client: Client, sessions: range, headers: dict[str, str] | None = None
) -> list[str]:
    seen: list[str] = []
    for start in range(sessions.start, sessions.stop, MAX_BATCH):
        chunk = range(start, min(start + MAX_BATCH, sessions.stop))
        response = await client.post(
            "/v1/answer/batch",
            json={"questions": [{"question": L1, "session": f"s{i}"} for i in chunk]},
            headers=headers,
        )
        seen += [a["version"] for a in response.json()["answers"]]
    return seen


async def test_canary_rollout_rollback_and_pins(client: Client, acme: dict[str, str]) -> None:
    rollout = await client.post(
        "/v1/admin/rollout", json={"version": "v1", "percent": 10}, headers=ADMIN
    )
    assert rollout.json() | {"updated_at": ""} == {
        "stable": "v2",
        "canary": "v1",
        "percent": 10.0,
        "updated_at": "",
    }
    await client.post("/v1/admin/pins", json={"tenant": "acme", "version": "v2"}, headers=ADMIN)

    seen = await _versions_seen(client, range(1000))
    again = await _versions_seen(client, range(1000))
    pinned = await _versions_seen(client, range(200), acme)

    assert 0.06 < seen.count("v1") / len(seen) < 0.14
    assert seen == again
    assert set(pinned) == {"v2"}

    await client.post("/v1/admin/rollback", headers=ADMIN)
    assert set(await _versions_seen(client, range(1000))) == {"v2"}


async def test_a_tenant_is_whoever_holds_its_key(client: Client, acme: dict[str, str]) -> None:
    await client.post("/v1/admin/pins", json={"tenant": "acme", "version": "v1"}, headers=ADMIN)
    issued = await client.post("/v1/admin/tenant-keys", json={"tenant": "beta"}, headers=ADMIN)
    beta = {"X-API-Key": issued.json()["key"]}

    claimed = await client.post("/v1/answer", json={"question": L1, "tenant": "acme"})
    forged = await client.post("/v1/answer", json={"question": L1}, headers={"X-API-Key": "x"})
    other = await client.post("/v1/answer", json={"question": L1, "tenant": "acme"}, headers=beta)
    batch = await client.post(
        "/v1/answer/batch",
        json={"questions": [{"question": L1}, {"question": L1, "tenant": "beta"}]},
        headers=acme,
    )
    assert (claimed.status_code, forged.status_code, other.status_code) == (401, 401, 403)
    assert "X-API-Key" in claimed.json()["hint"]
    assert "not a live tenant key" in forged.json()["detail"]
    assert batch.status_code == 403
    # The key says who asks: acme's pin, without naming acme; anonymous callers get stable.
    assert (await ask(client, L1, acme))["version"] == "v1"
    assert (await ask(client, L1, acme, tenant="acme"))["version"] == "v1"
    assert (await ask(client, L1, beta))["version"] == "v2"
    assert (await ask(client, L1))["version"] == "v2"

    listed = (await client.get("/v1/admin/tenant-keys?tenant=acme", headers=ADMIN)).json()
    assert [k["tenant"] for k in listed["keys"]] == ["acme"]
    assert "key" not in listed["keys"][0]
    revoke = {"key_id": listed["keys"][0]["key_id"]}
    assert (
        await client.post("/v1/admin/tenant-keys/revoke", json=revoke, headers=ADMIN)
    ).is_success
    refused = await client.post("/v1/answer", json={"question": L1}, headers=acme)
    assert refused.status_code == 401  # at once on the replica that revoked it


async def test_with_tenant_auth_trust_the_request_names_its_tenant(store_url: str) -> None:
    async with AsyncTestClient(create_app(settings(store_url, tenant_auth="trust"))) as client:
        await client.post("/v1/admin/pins", json={"tenant": "acme", "version": "v1"}, headers=ADMIN)
        assert (await ask(client, L1, tenant="acme"))["version"] == "v1"
        assert (await ask(client, L1, {"X-API-Key": "ignored"}))["version"] == "v2"


async def test_a_flip_by_another_process_is_seen_within_a_second(
    client: Client,
    store_url: str,
) -> None:
    assert (await ask(client, L1))["version"] == "v2"
    other = open_store(store_url)  # as the CLI or a compile on another machine would
    other.rollback()
    other.close()

    flipped = time.monotonic()
    while (await ask(client, L1))["version"] != "v1":
        assert time.monotonic() - flipped < 1.0, "the flip was not seen within a second"
        await asyncio.sleep(0.02)


class _FlippingComposer(OfflineProvider):
    """Moves the pointer while a request is being answered."""

    def __init__(self, store_url: str) -> None:
        super().__init__()
        self.store_url = store_url

    def compose(self, question: str, context: str, *, max_tokens: int) -> str:
        store = open_store(self.store_url)
        store.rollback()
        store.close()
        time.sleep(0.2)  # the watcher sees the flip before this request ends
        return super().compose(question, context, max_tokens=max_tokens)


async def test_an_in_flight_request_finishes_on_the_version_it_started_with(
    store_url: str,
) -> None:
    app = create_app(settings(store_url), provider=_FlippingComposer(store_url))
    async with AsyncTestClient(app) as client:
        during = await ask(client, L3)
        after = await ask(client, L1)
    assert (during["layer"], during["version"]) == ("L3", "v2")
    assert after["version"] == "v1"


async def test_a_spent_llm_budget_skips_l3_but_not_l1_or_l2(
    store_url: str, acme: dict[str, str]
) -> None:
    async with AsyncTestClient(create_app(settings(store_url, l3_budget=0))) as client:
        composed = await ask(client, L3, acme)
        exact = await ask(client, L1, acme)
        routed = await ask(client, L2, acme)
    assert (composed["layer"], composed["faq_only"]) == ("SAFE", True)
    assert (exact["layer"], routed["layer"]) == ("L1", "L2")
    assert (exact["faq_only"], routed["faq_only"]) == (True, True)


async def test_a_replica_stays_ready_through_a_flip_without_any_request(
    client: Client, store_url: str
) -> None:
    other = open_store(store_url)
    other.rollback()  # v2 -> v1, as another process would
    other.close()

    flipped = time.monotonic()
    while True:
        ready = await client.get("/readyz")
        assert ready.status_code == 200, ready.text  # never out of the load balancer
        if ready.json()["version"] == "v1":
            break
        assert time.monotonic() - flipped < 1.0
        await asyncio.sleep(0.02)


class _ThreadedComposer(OfflineProvider):
    """The offline composer under another name: the service runs its ladder in a thread, as
    it does for a composer that does I/O."""

    name = "threaded-offline"


@pytest.mark.parametrize("composer", ["offline", "threaded"])
async def test_concurrent_cold_questions_share_encoder_calls_and_get_the_same_answers(
    store_url: str, composer: str, acme: dict[str, str]
) -> None:
    """With the route memo off every routed question needs the encoder. Asked all at once,
    they are embedded together (one call: the batch is exactly as large as the questions
    that need it, the window a minute), and answered exactly as one by one."""
    lines = [
        line
        for name in ("queries.jsonl", "regression.jsonl")
        for line in (EXAMPLES / name).read_text("utf-8").splitlines()
    ]
    # 24 (under anyio's 40 worker threads: a thread blocked on the batcher holds one).
    queries = [json.loads(line)["query"] for line in lines]
    questions = list(dict.fromkeys([L1, L2, L3, OFF_TOPIC, *queries]))[:24]
    provider = OfflineProvider() if composer == "offline" else _ThreadedComposer()

    async def answers(app: Litestar) -> tuple[list[dict[str, Any]], AnswerService]:
        transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]  # Litestar is ASGI
        async with app.lifespan(), ConcurrentClient(transport=transport, base_url=BASE) as client:
            replies = await asyncio.gather(*(ask(client, q, acme) for q in questions))
            service: AnswerService = app.state.service
        for reply in replies:
            assert reply.pop("latency_ms") >= 0
        return list(replies), service

    inline, _ = await answers(
        create_app(settings(store_url, route_cache=0, encoder_batch=1), provider=provider)
    )
    encoded = [q for q, a in zip(questions, inline, strict=True) if a["layer"] != "L1"]
    assert len(encoded) > 12
    batched_app = create_app(
        settings(store_url, route_cache=0, encoder_batch=len(encoded), encoder_window_ms=60e3),
        provider=provider,
    )
    batched, service = await answers(batched_app)
    assert batched == inline
    assert {"L1", "L2", "SAFE"} <= {a["layer"] for a in batched}
    ready = service.version_for(None, None)
    assert service.batcher_for(ready) is None  # closed with the service
    assert ready.embedder is not None
    assert service.batchers[ready.embedder.model_id].calls == 1
    metrics = service.metrics.render().decode()
    assert f"ragc_encoder_batch_size_sum {float(len(encoded))}" in metrics


async def test_a_batch_is_capped_and_batches_run_beside_single_answers(client: Client) -> None:
    too_many = {"questions": [{"question": L1}] * (MAX_BATCH + 1)}
    refused = await client.post("/v1/answer/batch", json=too_many)
    assert refused.status_code == 400, refused.text
    full = {"questions": [{"question": L2, "session": f"s{i}"} for i in range(MAX_BATCH)]}
    batched, singles = await asyncio.gather(
        asyncio.gather(*(client.post("/v1/answer/batch", json=full) for _ in range(2))),
        asyncio.gather(*(ask(client, L1) for _ in range(5))),
    )
    for response in batched:
        assert response.status_code == 200
        assert len(response.json()["answers"]) == MAX_BATCH
    assert all(answer["layer"] == "L1" for answer in singles)
