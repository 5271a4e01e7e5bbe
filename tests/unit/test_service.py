"""The service objects on their own: the answer service, its LLM budget, pointer watcher and
audit writer (the e2e tests reach them through HTTP)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from schemas.errors import RagcError, StoreUnavailableError
from schemas.rollout import PointerState, RolloutRecord
from serving.audit import AuditWriter
from serving.budget import LLMBudget
from serving.errors import NotReadyError
from serving.pointer import PointerWatcher
from serving.runtime import LoadedVersion
from serving.service import AnswerService
from serving.settings import ServeSettings
from stores import SqliteStore
from stores.audit import AuditEvent, SqliteAuditLog
from tests.factories import make_snapshot

QUESTION = "How long do I have to return a bike?"


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqliteStore]:
    opened = SqliteStore(f"sqlite:///{tmp_path / 'store.db'}")
    opened.publish(make_snapshot("v1", answer="Thirty days."), activate=True)
    opened.publish(make_snapshot("v2", answer="Sixty days."))
    yield opened
    opened.close()


@pytest.fixture
def service(store: SqliteStore, tmp_path: Path) -> Iterator[AnswerService]:
    log = SqliteAuditLog(store.url)
    made = AnswerService(
        ServeSettings(store=store.url, pointer_poll_s=3600.0), store, audit_log=log
    )
    yield made
    made.close()
    log.close()


# --- AnswerService ---------------------------------------------------------------------------


def test_version_operations_take_effect_without_waiting_for_a_poll(
    service: AnswerService,
) -> None:
    assert service.answer(QUESTION).answer == "Thirty days."
    record = service.roll_out("v2", 100)
    assert (record.stable, service.rollout.stable) == ("v2", "v2")
    assert service.answer(QUESTION).answer == "Sixty days."
    service.pin("acme", "v1")
    assert service.answer(QUESTION, tenant="acme").answer == "Thirty days."
    service.pin("acme", None)
    assert service.answer(QUESTION, tenant="acme").answer == "Sixty days."
    assert service.roll_back().stable == "v1"
    assert service.answer(QUESTION).answer == "Thirty days."
    assert [v.version for v in service.published()] == ["v1", "v2"]


def test_a_canary_serves_its_share_of_sessions(service: AnswerService) -> None:
    service.roll_out("v2", 50)
    answers = {service.answer(QUESTION, session=f"s{i}").version for i in range(64)}
    assert answers == {"v1", "v2"}
    same = {service.answer(QUESTION, session="s7").version for _ in range(5)}
    assert len(same) == 1  # a session keeps its side


def test_misses_include_answers_not_yet_written(service: AnswerService) -> None:
    assert service.answer("Do you sell helmets?").layer == "SAFE"
    found = service.misses()  # the writer's queue is flushed first: no wait for its thread
    assert [(m.example, m.count) for m in found] == [("Do you sell helmets?", 1)]
    assert service.misses(tenant="acme") == []


def test_garbage_collection_never_removes_a_version_in_use(service: AnswerService) -> None:
    service.roll_out("v2", 100)
    service.pin("acme", "v1")  # older than the one newest version kept, but pinned
    report = service.collect_garbage(1)
    assert (report.removed, set(report.kept)) == ((), {"v1", "v2"})
    service.pin("acme", None)
    assert service.collect_garbage(1).removed == ("v1",)
    assert [v.version for v in service.published()] == ["v2"]


def test_no_active_version_is_not_ready(tmp_path: Path) -> None:
    empty = SqliteStore(f"sqlite:///{tmp_path / 'empty.db'}")
    made = AnswerService(ServeSettings(store=empty.url, pointer_poll_s=3600.0), empty)
    try:
        assert not made.ready
        with pytest.raises(NotReadyError):
            made.answer(QUESTION)
        assert made.misses() == []  # no audit log: nothing to report, no error
    finally:
        made.close()
        empty.close()


# --- LLMBudget ----------------------------------------------------------------------------


def test_the_budget_counts_per_tenant_and_starts_from_what_was_spent() -> None:
    budget = LLMBudget(2, {"acme": 1})
    assert budget.allows("acme")
    budget.spend("acme")
    assert not budget.allows("acme")
    assert budget.allows("globex")
    assert budget.allows(None)
    assert (budget.spent("acme"), budget.spent("globex")) == (2, 0)


def test_no_limit_always_allows() -> None:
    budget = LLMBudget(None)
    for _ in range(5):
        budget.spend("acme")
    assert budget.allows("acme")


def test_a_new_month_starts_a_new_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    budget = LLMBudget(1)
    budget.spend("acme")
    assert not budget.allows("acme")
    monkeypatch.setattr(budget, "_month", "1999-01")  # the month it last counted in
    assert budget.allows("acme")
    assert budget.spent("acme") == 0
    assert budget._month == datetime.now(UTC).strftime("%Y-%m")


# --- PointerWatcher -------------------------------------------------------------------------


class _FlakyPointers:
    """A store whose pointers can be moved or made unreadable."""

    def __init__(self) -> None:
        self.state = PointerState(rollout=RolloutRecord(stable="v1"))
        self.down = False

    def pointers(self) -> PointerState:
        if self.down:
            raise StoreUnavailableError("store down")
        return self.state


def test_the_watcher_reports_moves_and_keeps_the_last_state_through_an_outage() -> None:
    store = _FlakyPointers()
    seen: list[str | None] = []
    watcher = PointerWatcher(
        store,
        on_change=lambda state: seen.append(state.rollout.stable),
    )
    assert watcher.state.rollout.stable == "v1"
    watcher.refresh()
    assert seen == ["v1"]  # unchanged pointers are not reported again
    store.state = PointerState(rollout=RolloutRecord(stable="v2"))
    store.down = True
    assert watcher.refresh().rollout.stable == "v1"
    store.down = False
    assert watcher.refresh().rollout.stable == "v2"
    assert seen == ["v1", "v2"]


def test_lost_pointers_keep_the_last_state_degraded_and_are_logged_once_per_change(
    caplog: pytest.LogCaptureFixture,
) -> None:
    store = _FlakyPointers()
    store.state = PointerState(
        rollout=RolloutRecord(stable="v1", canary="v2", percent=5), pins={"acme": "v3"}
    )
    seen: list[PointerState] = []
    watcher = PointerWatcher(store, on_change=seen.append)
    kept = watcher.state
    assert (watcher.health, watcher.degraded) == ("ok", None)

    with caplog.at_level(logging.INFO, logger="serving.pointer"):
        store.state = PointerState(rollout=RolloutRecord())  # Redis flushed: every key gone
        for _ in range(3):
            assert watcher.refresh() == kept
        assert watcher.health == "lost"
        assert "lost its version pointers" in (watcher.degraded or "")
        store.down = True
        watcher.refresh()
        assert (watcher.health, watcher.state) == ("unreachable", kept)
        store.down = False
        store.state = PointerState(rollout=RolloutRecord(stable="v4"))  # republished
        assert watcher.refresh().rollout.stable == "v4"
    assert watcher.degraded is None
    assert [s.rollout.stable for s in seen] == ["v1", "v4"]
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 3  # lost, unreachable, readable again: once each
    assert "lost its version pointers" in messages[0]
    assert "v1, v2, v3" in messages[0]
    assert "readable again" in messages[2]


def test_a_store_that_never_had_a_stable_version_is_not_degraded() -> None:
    store = _FlakyPointers()
    store.state = PointerState(rollout=RolloutRecord())
    watcher = PointerWatcher(store)
    assert (watcher.refresh().rollout.stable, watcher.health) == (None, "ok")


def test_a_failing_change_handler_does_not_stop_the_move() -> None:
    store = _FlakyPointers()

    def refuse(_state: PointerState) -> None:
        raise RagcError("cannot load")

    watcher = PointerWatcher(store, on_change=refuse)
    assert watcher.state.rollout.stable == "v1"


def test_the_watcher_thread_polls_until_stopped() -> None:
    store = _FlakyPointers()
    moved = threading.Event()
    watcher = PointerWatcher(
        store,
        interval=0.01,
        on_change=lambda state: moved.set() if state.rollout.stable == "v2" else None,
    )
    watcher.start()
    try:
        store.state = PointerState(rollout=RolloutRecord(stable="v2"))
        assert moved.wait(60)
    finally:
        watcher.stop()
    assert watcher.state.rollout.stable == "v2"


# --- AuditWriter ----------------------------------------------------------------------------


class _Sink:
    def __init__(self) -> None:
        self.written: list[AuditEvent] = []
        self.failing = False

    def record(self, events: list[AuditEvent]) -> None:
        if self.failing:
            raise OSError("disk full")
        self.written.extend(events)


def _event(n: int) -> AuditEvent:
    return AuditEvent(
        ts=float(n),
        tenant=None,
        version="v1",
        layer="L1",
        cache_key=None,
        entry_id=None,
        latency_ms=0.1,
        question=f"q{n}",
        normalized=f"q{n}",
        confidence=1.0,
    )


def test_the_writer_writes_in_chunks_and_keeps_events_a_failed_write_refused(
    caplog: pytest.LogCaptureFixture,
) -> None:
    sink = _Sink()
    writer = AuditWriter(sink, interval=3600.0, chunk=2)
    try:
        sink.failing = True
        for n in range(5):
            writer.record(_event(n))
        for _ in range(3):
            assert writer.flush() == 0
        assert sink.written == []
        assert sum("audit writes failing" in r.message for r in caplog.records) == 1
        sink.failing = False
        assert writer.flush() == 5
        assert sum("writable again" in r.message for r in caplog.records) == 1
        assert [e.question for e in sink.written] == [f"q{n}" for n in range(5)]
    finally:
        writer.close()


def test_while_the_sink_is_down_the_queue_is_bounded_and_drops_are_counted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    sink = _Sink()
    counted: list[int] = []
    writer = AuditWriter(sink, interval=3600.0, chunk=4, capacity=10, on_drop=counted.append)
    try:
        sink.failing = True
        for n in range(25):
            writer.record(_event(n))
        assert writer.flush() == 0  # a failed chunk goes back in front, still within bounds
        for n in range(25, 28):
            writer.record(_event(n))
        assert (writer.dropped, sum(counted)) == (18, 18)
        assert sum("audit queue full" in r.message for r in caplog.records) == 1  # logged once
        sink.failing = False
        assert writer.flush() == 10
        assert [e.question for e in sink.written] == [f"q{n}" for n in range(18, 28)]  # newest
        assert any("drained" in r.message for r in caplog.records)
    finally:
        writer.close()


def test_closing_the_writer_flushes_what_is_left() -> None:
    sink = _Sink()
    writer = AuditWriter(sink, interval=3600.0)
    writer.record(_event(1))
    writer.close()
    assert [e.question for e in sink.written] == ["q1"]


def test_the_versions_in_use_are_stable_canary_and_pins() -> None:
    state = PointerState(
        rollout=RolloutRecord(stable="v3", canary="v4", percent=5), pins={"a": "v1", "b": "v3"}
    )
    assert state.in_use == {"v1", "v3", "v4"}
    assert PointerState(rollout=RolloutRecord()).in_use == set()


def test_a_store_that_pushes_changes_is_followed_by_them_not_only_polled() -> None:
    class _Pushing(_FlakyPointers):
        def __init__(self) -> None:
            super().__init__()
            self.listeners: list[Callable[[str], None]] = []

        def subscribe_pointer_changes(self, callback: Callable[[str], None]) -> Callable[[], None]:
            self.listeners.append(callback)
            return self.listeners.clear

    store = _Pushing()
    watcher = PointerWatcher(store, interval=3600.0)  # polling would not see it in time
    watcher.start()
    try:
        assert len(store.listeners) == 1
        store.state = PointerState(rollout=RolloutRecord(stable="v2"))
        store.listeners[0]('{"event": "activate"}')
        assert watcher.state.rollout.stable == "v2"
    finally:
        watcher.stop()
    assert store.listeners == []


def test_a_replica_that_flips_holds_only_the_versions_in_use(tmp_path: Path) -> None:
    store = SqliteStore(f"sqlite:///{tmp_path / 'flips.db'}")
    store.publish(make_snapshot("v1"), activate=True)
    service = AnswerService(ServeSettings(store=store.url, pointer_poll_s=3600.0), store)
    try:
        for n in range(2, 8):
            store.publish(make_snapshot(f"v{n}"), activate=True)
            service.pointers.refresh()
            assert service.answer(QUESTION).version == f"v{n}"
            assert set(service.versions._versions) == {f"v{n}"}
        store.pin("acme", "v2")  # in use again: loaded beside the stable
        service.pointers.refresh()
        assert set(service.versions._versions) == {"v2", "v7"}
        assert service.roll_back().stable == "v6"  # a rollback loads what it returns to
        assert set(service.versions._versions) == {"v2", "v6"}
        assert service.answer(QUESTION).version == "v6"
    finally:
        service.close()
        store.close()


def test_the_version_requests_use_stays_loaded_while_the_next_one_loads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = SqliteStore(f"sqlite:///{tmp_path / 'flip.db'}")
    store.publish(make_snapshot("v1"), activate=True)
    store.publish(make_snapshot("v2"))
    service = AnswerService(ServeSettings(store=store.url, pointer_poll_s=3600.0), store)
    during: list[tuple[bool, str]] = []
    load = service.versions.get

    def watched(version: str) -> LoadedVersion:
        if version == "v2" and "v2" not in service.versions:  # the flip's load
            during.append((service.ready, service.answer(QUESTION).version))
        return load(version)

    monkeypatch.setattr(service.versions, "get", watched)
    try:
        store.activate("v2")
        service.pointers.refresh()
        assert during == [(True, "v1")]  # ready, and answered by v1, while v2 loads
        assert set(service.versions._versions) == {"v2"}  # then v1 is released
    finally:
        service.close()
        store.close()


def test_every_version_in_use_stays_loaded_however_many(tmp_path: Path) -> None:
    store = SqliteStore(f"sqlite:///{tmp_path / 'many.db'}")
    labels = [f"v{i}" for i in range(1, 7)]
    for label in labels:
        store.publish(make_snapshot(label, answer=f"{label} days."), activate=label == "v1")
    store.rollout("v2", 10)
    for tenant, label in zip(("a", "b", "c", "d"), labels[2:], strict=True):
        store.pin(tenant, label)
    service = AnswerService(ServeSettings(store=store.url, pointer_poll_s=3600.0), store)
    try:
        assert service.pointers.state is not None
        in_use = service.pointers.state.in_use
        assert in_use == set(labels)
        assert all(label in service.versions for label in labels)  # six, beyond the four
        for _ in range(3):  # answering every tenant loads nothing and evicts nothing
            for tenant, label in zip(("a", "b", "c", "d"), labels[2:], strict=True):
                assert service.answer(QUESTION, tenant=tenant).version == label
        assert all(label in service.versions for label in labels)
        store.pin("d", None)  # v6 is no longer in use: it may go, the others stay
        service.pointers.refresh()
        assert all(label in service.versions for label in labels[:5])
    finally:
        service.close()
        store.close()
