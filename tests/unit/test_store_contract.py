"""The store contract: every backend passes these tests (see ``store`` in conftest)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import msgspec
import pytest

from schemas.errors import (
    CorruptSnapshotError,
    ImmutableVersionError,
    InvalidInputError,
    PermanentError,
    VersionNotFoundError,
)
from schemas.keys import exact_key, intent_key, topic_key
from schemas.manifest import Snapshot
from schemas.rollout import choose_version
from stores import SnapshotStore, open_store
from stores.base import RecordLookup
from tests.factories import make_snapshot

ROOT = Path(__file__).resolve().parents[2]
QUESTION = "How long do I have to return a bike?"


def _records(store: SnapshotStore) -> RecordLookup:
    """Every backend can also read one record by its key."""
    assert isinstance(store, RecordLookup)
    return store


def test_empty_store_has_no_versions_and_no_pointer(store: SnapshotStore) -> None:
    assert store.versions() == []
    assert store.active_version() is None
    assert choose_version(store.pointers(), tenant="acme") is None


def test_publish_reads_back_every_record_through_the_interface(store: SnapshotStore) -> None:
    snapshot = make_snapshot("v1")
    info = store.publish(snapshot, activate=True)

    assert info.version == "v1"
    assert info.active
    assert store.active_version() == "v1"
    assert store.load("v1") == snapshot
    assert store.manifest("v1").checksum == snapshot.manifest.checksum
    found = _records(store).exact(exact_key("v1", "  how LONG do i have to return a bike "))
    assert found is not None
    assert found.id == "refund.window"
    alias = _records(store).exact(exact_key("v1", "what's the return window"))
    assert alias is not None
    assert alias.id == "refund.window"
    intent = _records(store).intent(intent_key("v1", "refund.window"))
    assert intent is not None
    assert intent.template.startswith("You can return")
    topic = _records(store).topic(topic_key("v1", "refunds"))
    assert topic is not None
    assert topic.intents == ("refund.window",)
    assert _records(store).exact(exact_key("v1", "an unrelated question")) is None


def test_publish_without_activate_leaves_the_active_version(store: SnapshotStore) -> None:
    store.publish(make_snapshot("v1"), activate=True)
    info = store.publish(make_snapshot("v2", answer="changed"))

    assert not info.active
    assert store.active_version() == "v1"
    assert [v.version for v in store.versions()] == ["v1", "v2"]


def test_versions_are_immutable(store: SnapshotStore) -> None:
    store.publish(make_snapshot("v1"), activate=True)

    with pytest.raises(ImmutableVersionError):
        store.publish(make_snapshot("v1", answer="overwritten"))

    record = _records(store).exact(exact_key("v1", QUESTION))
    assert record is not None
    assert record.answer == "You can return a bike within 30 days."


def test_a_tampered_snapshot_is_refused_and_nothing_changes(store: SnapshotStore) -> None:
    store.publish(make_snapshot("v1"), activate=True)
    good = make_snapshot("v2")
    tampered = msgspec.structs.replace(good, exact=good.exact[:0])

    with pytest.raises(CorruptSnapshotError):
        store.publish(tampered, activate=True)

    assert store.active_version() == "v1"
    assert [v.version for v in store.versions()] == ["v1"]


def test_tenants_never_see_each_others_answers(store: SnapshotStore) -> None:
    snapshot = make_snapshot("v1", tenant_answers={"acme": "Acme: 60 days.", "globex": "Globex."})
    store.publish(snapshot, activate=True)

    acme = _records(store).exact(exact_key("v1", QUESTION, tenant="acme"))
    globex = _records(store).exact(exact_key("v1", QUESTION, tenant="globex"))
    shared = _records(store).exact(exact_key("v1", QUESTION))

    assert acme is not None
    assert acme.answer == "Acme: 60 days."
    assert globex is not None
    assert globex.answer == "Globex."
    assert shared is not None
    assert shared.tenant is None
    assert _records(store).exact(exact_key("v1", QUESTION, tenant="initech")) is None


def test_rollback_returns_to_the_previous_version_then_further(store: SnapshotStore) -> None:
    for version in ("v1", "v2", "v3"):
        store.publish(make_snapshot(version), activate=True)

    assert store.rollback().stable == "v2"
    assert store.rollback().stable == "v1"
    with pytest.raises(PermanentError, match="no earlier version"):
        store.rollback()
    assert store.active_version() == "v1"


def test_canary_serves_its_share_of_sessions_stably(store: SnapshotStore) -> None:
    store.publish(make_snapshot("v1"), activate=True)
    store.publish(make_snapshot("v2"))

    record = store.rollout("v2", 10)
    state = store.pointers()
    chosen = [choose_version(state, tenant="acme", session=f"s{i}") for i in range(4000)]

    assert (record.stable, record.canary, record.percent) == ("v1", "v2", 10)
    assert 0.08 < chosen.count("v2") / len(chosen) < 0.12
    again = [choose_version(state, tenant="acme", session=f"s{i}") for i in range(4000)]
    assert again == chosen


def test_a_canary_draws_a_secret_seed_and_keeps_it_while_its_share_grows(
    store: SnapshotStore,
) -> None:
    store.publish(make_snapshot("v1"), activate=True)
    store.publish(make_snapshot("v2"))
    store.publish(make_snapshot("v3"))

    first = store.rollout("v2", 10).seed
    state = store.pointers()
    sessions = [f"s{i}" for i in range(2000)]
    early = {s for s in sessions if choose_version(state, session=s) == "v2"}
    grown = store.rollout("v2", 40)
    later = {s for s in sessions if choose_version(store.pointers(), session=s) == "v2"}

    assert len(first) == 32
    assert grown.seed == first
    assert early < later  # nobody already in the canary leaves it as the share grows
    assert store.rollout("v3", 10).seed not in ("", first)  # a new canary, a new cohort
    assert "seed" not in msgspec.to_builtins(grown.public())


def test_rollback_during_a_canary_ends_the_canary(store: SnapshotStore) -> None:
    store.publish(make_snapshot("v1"), activate=True)
    store.publish(make_snapshot("v2"))
    store.rollout("v2", 50)

    record = store.rollback()

    assert (record.stable, record.canary) == ("v1", None)
    state = store.pointers()
    assert {choose_version(state, session=f"s{i}") for i in range(200)} == {"v1"}


def test_rollout_to_100_percent_promotes_the_canary(store: SnapshotStore) -> None:
    store.publish(make_snapshot("v1"), activate=True)
    store.publish(make_snapshot("v2"))
    store.rollout("v2", 25)

    record = store.rollout("v2", 100)

    assert (record.stable, record.canary) == ("v2", None)
    assert store.rollback().stable == "v1"


def test_rollout_needs_a_stable_version_and_a_valid_percent(store: SnapshotStore) -> None:
    store.publish(make_snapshot("v1"))
    with pytest.raises(PermanentError, match="no stable version"):
        store.rollout("v1", 10)
    with pytest.raises(InvalidInputError):
        store.rollout("v1", 120)
    with pytest.raises(VersionNotFoundError):
        store.rollout("v9", 10)


def test_a_pinned_tenant_stays_on_its_version(store: SnapshotStore) -> None:
    store.publish(make_snapshot("v1"), activate=True)
    store.pin("acme", "v1")
    store.publish(make_snapshot("v2"), activate=True)

    state = store.pointers()
    assert choose_version(state, tenant="acme") == "v1"
    assert choose_version(state, tenant="globex") == "v2"
    assert [v.pinned_by for v in store.versions()] == [("acme",), ()]

    store.pin("acme", None)
    assert choose_version(store.pointers(), tenant="acme") == "v2"


def test_pinning_to_a_missing_version_or_a_bad_tenant_fails(store: SnapshotStore) -> None:
    store.publish(make_snapshot("v1"), activate=True)
    with pytest.raises(VersionNotFoundError):
        store.pin("acme", "v7")
    with pytest.raises(InvalidInputError):
        store.pin("Acme Corp", "v1")
    assert store.pointers().pins == {}


def test_gc_keeps_the_newest_and_every_version_in_use(store: SnapshotStore) -> None:
    for version in ("v1", "v2", "v3", "v4"):
        store.publish(make_snapshot(version), activate=version == "v3")
    store.pin("acme", "v1")

    report = store.gc(keep=1)

    assert report.removed == ("v2",)
    assert set(report.kept) == {"v1", "v3", "v4"}
    assert [v.version for v in store.versions()] == ["v1", "v3", "v4"]
    assert _records(store).exact(exact_key("v2", QUESTION)) is None
    with pytest.raises(VersionNotFoundError):
        store.load("v2")
    with pytest.raises(InvalidInputError):
        store.gc(keep=0)


def test_next_version_is_fresh(store: SnapshotStore) -> None:
    assert store.next_version() == "v1"
    store.publish(make_snapshot("v1"))
    store.publish(make_snapshot("v2"))
    assert store.next_version() == "v3"


_DIE_BEFORE_FLIP = textwrap.dedent(
    """
    import os, sys
    from stores import open_store
    from tests.factories import make_snapshot

    store = open_store(sys.argv[1])
    def die(*args, **kwargs):
        os._exit(17)  # the publisher is killed after loading, before the pointer flips
    type(store)._seal = die
    store.publish(make_snapshot("v2", answer="half-published", extra_exact=30), activate=True)
    """
)


def test_a_publisher_killed_before_the_flip_leaves_no_torn_version(store_url: str) -> None:
    first = open_store(store_url)
    first.publish(make_snapshot("v1"), activate=True)
    first.close()

    died = subprocess.run(
        [sys.executable, "-c", _DIE_BEFORE_FLIP, store_url], cwd=ROOT, check=False
    )
    assert died.returncode == 17

    store = open_store(store_url)
    try:
        assert store.active_version() == "v1"
        assert [v.version for v in store.versions()] == ["v1"]
        assert _records(store).exact(exact_key("v2", QUESTION)) is None
        with pytest.raises(VersionNotFoundError):
            store.activate("v2")
        with pytest.raises(PermanentError, match="partial load") as refused:
            store.publish(make_snapshot("v2"))
        assert "written nothing for 60 s" in (refused.value.hint or "")
        assert store.gc(keep=5).partial_removed == ()  # its heartbeat is a moment old
        # The dead publisher's heartbeat ages; a short grace removes its load once it has.
        report = store.gc(keep=5, partial_grace_s=0.05)
        while not report.partial_removed:
            report = store.gc(keep=5, partial_grace_s=0.05)
        assert report.partial_removed == ("v2",)
        store.publish(make_snapshot("v2"), activate=True)
        assert store.active_version() == "v2"
    finally:
        store.close()


def test_a_publisher_that_fails_removes_its_own_partial_load(
    store: SnapshotStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    store.publish(make_snapshot("v1"), activate=True)

    def torn(*_args: object, **_kwargs: object) -> None:
        raise CorruptSnapshotError("version 'v2': 1 rows written, 2 expected")

    monkeypatch.setattr(store, "_seal", torn)
    with pytest.raises(CorruptSnapshotError):
        store.publish(make_snapshot("v2"), activate=True)
    monkeypatch.undo()

    assert store.active_version() == "v1"
    assert store.gc(keep=5).partial_removed == ()  # nothing left to collect
    store.publish(make_snapshot("v2"), activate=True)  # at once, no `gc` needed
    assert store.active_version() == "v2"


def test_load_returns_a_snapshot_that_verifies(store: SnapshotStore) -> None:
    store.publish(make_snapshot("v1", extra_exact=3))
    loaded = store.load("v1")
    assert isinstance(loaded, Snapshot)
    loaded.verify()
    assert len(loaded.exact) == 4
