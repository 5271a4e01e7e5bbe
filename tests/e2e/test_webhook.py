"""The knowledge-changed webhook end to end: signed HTTP requests, the ledger, the recompile.

The app runs on an empty SQLite store (the answer routes do not matter here). In embedded mode
the recompile is a real subprocess running a quick fake command that logs its arguments and
waits for a gate file, so a test decides when a "recompile" ends. The Prefect mode emits a real
event to the session's Prefect test server and reads it back.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import anyio.to_thread
import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient

from serving.app import create_app
from serving.dispatch import Dispatcher
from serving.settings import ServeSettings
from serving.signatures import delivery_id, sign
from stores.ledger import Delivery, SqliteChangeLedger

pytestmark = [pytest.mark.e2e]

SECRET = "whsec-e2e"
URL = "/v1/webhooks/knowledge-changed"
FAKE = """
import pathlib, sys, time
log, gate = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
with log.open("a") as out:
    out.write(" ".join(sys.argv[3:]) + "\\n")
deadline = time.monotonic() + 30
while not gate.exists() and time.monotonic() < deadline:
    time.sleep(0.01)
"""

Client = AsyncTestClient[Litestar]


class Harness:
    """A store file, a fake recompile command and the app's dispatcher."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.url = f"sqlite:///{root / 'knowledge.db'}"
        self.log = root / "recompiles.log"
        self.gate = root / "gate"
        self.gate.touch()  # recompiles end at once unless a test removes the gate
        self.app: Litestar | None = None

    def command(self, knowledge: str, store: str) -> list[str]:
        return [sys.executable, "-c", FAKE, str(self.log), str(self.gate), knowledge, store]

    def settings(self, **changes: object) -> ServeSettings:
        fields: dict[str, object] = {
            "store": self.url,
            "webhook_secret": SECRET,
            "knowledge": str(self.root / "kb"),
            "pointer_poll_s": 0.05,
            **changes,
        }
        return ServeSettings(**fields)  # type: ignore[arg-type]

    def create(self, **changes: object) -> Litestar:
        self.app = create_app(self.settings(**changes), recompile=self.command)
        return self.app

    @property
    def dispatcher(self) -> Dispatcher:
        assert self.app is not None
        found: Dispatcher = self.app.state.dispatcher
        return found

    def recompiles(self) -> list[str]:
        return self.log.read_text().splitlines() if self.log.exists() else []

    def entries(self) -> list[Delivery]:
        ledger = SqliteChangeLedger(self.url)
        try:
            return ledger.entries()
        finally:
            ledger.close()

    async def idle(self) -> None:
        assert await anyio.to_thread.run_sync(self.dispatcher.wait, 20.0)


@pytest.fixture
def harness(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Harness:
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    return Harness(tmp_path)


@pytest.fixture
async def client(harness: Harness) -> AsyncIterator[Client]:
    async with AsyncTestClient(harness.create()) as test_client:
        yield test_client


def body_of(changed: list[str], **fields: object) -> bytes:
    return json.dumps({"changed": changed, **fields}).encode()


def signed(body: bytes, *, at: float | None = None, secret: str = SECRET) -> dict[str, str]:
    stamp = int(time.time() if at is None else at)
    return {
        "X-Ragc-Signature": sign(secret, body, timestamp=stamp),
        "Content-Type": "application/json",
    }


async def test_a_signed_change_is_recorded_and_recompiled(client: Client, harness: Harness) -> None:
    body = body_of(["faq.jsonl", "help/account.html"])
    headers = signed(body)
    response = await client.post(URL, content=body, headers=headers)

    assert response.status_code == 202, response.text
    reply = response.json()
    stamp = int(headers["X-Ragc-Signature"].split(",")[0].removeprefix("t="))
    assert reply["delivery"] == delivery_id(stamp, body)
    assert reply["mode"] == "embedded"
    assert reply["status"] in {"dispatched", "done"}
    await harness.idle()
    [entry] = harness.entries()
    assert (entry.delivery, entry.status, entry.signed_at) == (reply["delivery"], "done", stamp)
    assert (entry.knowledge, entry.changed) == ("kb", ("faq.jsonl", "help/account.html"))
    assert harness.recompiles() == [f"{harness.root / 'kb'} {harness.url}"]
    assert harness.dispatcher.runs == 1


async def test_a_replayed_delivery_is_refused(client: Client, harness: Harness) -> None:
    body = body_of(["faq.jsonl"])
    headers = signed(body)
    assert (await client.post(URL, content=body, headers=headers)).status_code == 202
    replay = await client.post(URL, content=body, headers=headers)

    assert replay.status_code == 409, replay.text
    assert "already received" in replay.json()["detail"]
    assert "replayed deliveries are refused" in replay.json()["detail"]
    await harness.idle()
    assert len(harness.entries()) == 1
    assert harness.dispatcher.runs == 1


def bad_headers(kind: str, body: bytes) -> dict[str, str]:
    now = time.time()
    return {
        "unsigned": {"Content-Type": "application/json"},
        "malformed": {"X-Ragc-Signature": "sha256=abc"},
        "stale": signed(body, at=now - 3600),
        "future": signed(body, at=now + 3600),
        "tampered": signed(body_of(["other.md"])),
        "wrong-secret": signed(body, secret="not-the-secret"),
    }[kind]


@pytest.mark.parametrize(
    ("kind", "reason"),
    [
        ("unsigned", "no X-Ragc-Signature header"),
        ("malformed", "malformed X-Ragc-Signature"),
        ("stale", "stale: signed 3600 s ago"),
        ("future", "in the future"),
        ("tampered", "does not match the body"),
        ("wrong-secret", "does not match the body"),
    ],
)
async def test_unsigned_badly_signed_and_stale_requests_are_refused_unrecorded(
    client: Client, harness: Harness, kind: str, reason: str
) -> None:
    body = body_of(["faq.jsonl"])
    response = await client.post(URL, content=body, headers=bad_headers(kind, body))

    assert response.status_code == 401, response.text
    assert reason in response.json()["detail"]
    assert "X-Ragc-Signature" in response.headers["www-authenticate"]
    assert harness.entries() == []
    assert harness.recompiles() == []


async def test_the_webhook_refuses_until_a_secret_is_configured(harness: Harness) -> None:
    body = body_of(["faq.jsonl"])
    async with AsyncTestClient(harness.create(webhook_secret=None)) as client:
        response = await client.post(URL, content=body, headers=signed(body))
    assert response.status_code == 403, response.text
    assert "set RAGC_WEBHOOK_SECRET" in response.json()["detail"]
    assert harness.app is not None
    assert harness.app.state.dispatcher is None


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        ({"changed": ["../secrets.txt"]}, "contains '..'"),
        ({"changed": ["/etc/passwd"]}, "is absolute"),
        ({"changed": ["a\\b.md"]}, "backslashes"),
        ({"changed": []}, "length >= 1"),
        ({"changed": ["a.md"] * 1001}, "length <= 1000"),
        ({"changed": ["a.md"], "knowledge": "no spaces"}, "knowledge"),
        ({"changed": ["a.md"], "extra": 1}, "extra"),
        ({"paths": ["a.md"]}, "changed"),
    ],
)
async def test_bad_changes_are_refused_with_400_unrecorded(
    client: Client, harness: Harness, payload: dict[str, object], reason: str
) -> None:
    body = json.dumps(payload).encode()
    response = await client.post(URL, content=body, headers=signed(body))
    assert response.status_code == 400, response.text
    assert reason in response.json()["detail"]
    assert harness.entries() == []


async def test_changes_during_a_recompile_start_exactly_one_more(
    client: Client, harness: Harness
) -> None:
    harness.gate.unlink()  # the first recompile waits until the test lets it end
    replies = []
    for changed in (["a.md"], ["b.md"], ["c.md"]):
        body = body_of(changed)
        response = await client.post(URL, content=body, headers=signed(body))
        assert response.status_code == 202, response.text
        replies.append(response.json())

    assert [r["status"] for r in replies] == ["dispatched", "recorded", "recorded"]
    assert "queued" in replies[1]["detail"]
    dispatcher = harness.dispatcher
    assert (dispatcher.running, dispatcher.dirty, dispatcher.runs) == (True, True, 1)
    harness.gate.touch()
    await harness.idle()

    assert (dispatcher.running, dispatcher.dirty, dispatcher.runs) == (False, False, 2)
    assert len(harness.recompiles()) == 2
    assert {e.status for e in harness.entries()} == {"done"}


async def test_without_a_knowledge_folder_the_change_is_recorded_and_failed(
    harness: Harness,
) -> None:
    body = body_of(["faq.jsonl"])
    async with AsyncTestClient(harness.create(knowledge=None)) as client:
        response = await client.post(URL, content=body, headers=signed(body))
        assert response.status_code == 202, response.text
        assert response.json()["status"] == "failed"
        assert "RAGC_KNOWLEDGE is not set" in response.json()["detail"]
    [entry] = harness.entries()
    assert entry.status == "failed"
    assert entry.knowledge == "default"
    assert harness.recompiles() == []


async def test_deliveries_recorded_before_a_crash_are_dispatched_at_start_up(
    harness: Harness,
) -> None:
    ledger = SqliteChangeLedger(harness.url)
    ledger.record("before-the-crash", signed_at=int(time.time()), knowledge="kb", changed=["a"])
    ledger.close()
    async with AsyncTestClient(harness.create()):
        await harness.idle()
    [entry] = harness.entries()
    assert entry.status == "done"
    assert harness.dispatcher.runs == 1


async def test_the_answer_service_starts_on_an_empty_store(client: Client) -> None:
    assert (await client.get("/healthz")).status_code == 200
    assert (await client.get("/readyz")).status_code == 503
    schema = (await client.get("/schema/openapi.json")).json()
    assert "/v1/webhooks/knowledge-changed" in schema["paths"]


@pytest.mark.usefixtures("prefect_harness")
async def test_with_a_prefect_api_the_change_becomes_a_prefect_event(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    from prefect.client.orchestration import get_client  # noqa: PLC0415
    from prefect.events.filters import EventFilter, EventNameFilter, EventResourceFilter  # noqa: PLC0415
    from prefect.settings import PREFECT_API_URL  # noqa: PLC0415

    api = PREFECT_API_URL.value()
    assert api, "the Prefect test harness sets the API URL in Prefect's settings"
    monkeypatch.setenv("PREFECT_API_URL", api)  # as a production service would have it
    changed = ["faq.jsonl", f"help/{time.time_ns()}.md"]
    body = body_of(changed, knowledge="examples")
    async with AsyncTestClient(harness.create()) as client:
        response = await client.post(URL, content=body, headers=signed(body))
    assert response.status_code == 202, response.text
    reply = response.json()
    assert (reply["mode"], reply["status"]) == ("prefect-event", "dispatched")
    assert "ragc.knowledge.changed" in reply["detail"]
    assert harness.recompiles() == []

    found = None
    async with get_client() as prefect:
        for _ in range(120):
            page = await prefect.read_events(
                filter=EventFilter(
                    event=EventNameFilter(name=["ragc.knowledge.changed"]),
                    resource=EventResourceFilter(id=["ragc.knowledge.examples"]),
                ),
                limit=50,
            )
            found = next((e for e in page.events if e.payload.get("changed") == changed), None)
            if found is not None:
                break
            await asyncio.sleep(0.25)
    assert found is not None, "the event never reached the Prefect API"
    assert found.event == "ragc.knowledge.changed"
    assert found.resource.id == "ragc.knowledge.examples"
    assert found.payload == {"changed": changed, "delivery": reply["delivery"]}
    [entry] = harness.entries()
    assert entry.status == "dispatched"
    assert str(found.id) in (entry.detail or "")
