"""The Postgres warm tier against a real server: migrations, audit, review, ledger, catalogue.

Every test gets its own throwaway database (created through ``RAGC_TEST_PG_DSN``, by default
the local ``test`` database, and dropped afterwards). Without a reachable server the tests are
skipped, except under ``CI=true`` where they fail.
"""

from __future__ import annotations

import inspect
import json
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec
import psycopg
import pytest
from typer.testing import CliRunner

from ragc.cli import app
from schemas.errors import (
    ImmutableVersionError,
    InvalidInputError,
    PermanentError,
    StoreConfigError,
    StoreUnavailableError,
)
from schemas.manifest import Manifest
from schemas.records import IntentTemplate, SlotSpec
from serving.audit import AuditWriter
from stores.audit import AuditEvent, SqliteAuditLog
from stores.ledger import ChangeLedger, DuplicateDeliveryError, SqliteChangeLedger
from stores.postgres import (
    LOCK_KEY,
    MigrationLockedError,
    NotMigratedError,
    Pool,
    PostgresAuditLog,
    PostgresChangeLedger,
    PostgresReviewQueue,
    PostgresTenantKeys,
    PostgresVersionCatalog,
    current_revision,
    migrate,
    migration_status,
    migrations,
    open_pool,
)
from stores.review import ReviewItem, ReviewQueue, SqliteReviewQueue
from stores.tenant_keys import KEY_PREFIX, SqliteTenantKeys, TenantKeys, digest_key
from stores.warm import WarmTier

pytestmark = pytest.mark.integration

WARM_TABLES = {
    "schema_migrations",
    "versions",
    "l2_slot_values",
    "audit_answers",
    "audit_misses",
    "review_items",
    "webhook_deliveries",
    "tenant_keys",
}
NOW = 1_790_000_000
runner = CliRunner()


def _tables(dsn: str) -> set[str]:
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'ragc'"
        ).fetchall()
    return {r[0] for r in rows}


# --- migrations -----------------------------------------------------------------------------


def test_migrations_apply_once_and_are_idempotent(blank_dsn: str) -> None:
    assert current_revision(blank_dsn) is None
    names = [m.name for m in migrations()]
    assert names[0] == "0001_warm_tier"
    assert migrate(blank_dsn) == names
    assert _tables(blank_dsn) == WARM_TABLES
    assert current_revision(blank_dsn) == migrations()[-1].version
    assert migrate(blank_dsn) == []
    assert migrate(blank_dsn) == []
    status = migration_status(blank_dsn)
    assert status.up_to_date
    assert [a.name for a in status.applied] == names
    assert not any(a.changed for a in status.applied)


def test_concurrent_upgraders_apply_each_migration_once(blank_dsn: str) -> None:
    start = threading.Barrier(2)
    results: list[list[str]] = []
    failures: list[BaseException] = []

    def upgrade() -> None:
        start.wait()
        try:
            results.append(migrate(blank_dsn))
        except BaseException as exc:  # noqa: BLE001 - reported below
            failures.append(exc)

    threads = [threading.Thread(target=upgrade) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []
    assert sorted(results, key=len) == [[], [m.name for m in migrations()]]
    with psycopg.connect(blank_dsn) as conn:
        row = conn.execute("SELECT count(*) FROM ragc.schema_migrations").fetchone()
    assert row == (len(migrations()),)


def test_an_upgrader_waits_for_the_lock_only_so_long(blank_dsn: str) -> None:
    with psycopg.connect(blank_dsn, autocommit=True) as holder:
        holder.execute("SELECT pg_advisory_lock(%s)", (LOCK_KEY,))
        with pytest.raises(MigrationLockedError, match="held the migration lock"):
            migrate(blank_dsn, lock_timeout=0.2)
    assert current_revision(blank_dsn) is None
    assert migrate(blank_dsn) != []


def test_a_changed_applied_migration_is_refused(dsn: str) -> None:
    with psycopg.connect(dsn) as conn:
        conn.execute("UPDATE ragc.schema_migrations SET checksum = 'edited'")
    assert migration_status(dsn).applied[0].changed
    with pytest.raises(PermanentError, match="changed after it was applied"):
        migrate(dsn)


@pytest.mark.parametrize(
    "component",
    [PostgresAuditLog, PostgresReviewQueue, PostgresChangeLedger, PostgresVersionCatalog],
)
def test_an_unmigrated_database_is_a_clear_error(blank_dsn: str, component: type[Any]) -> None:
    with pytest.raises(NotMigratedError, match=r"has no ragc schema.*ragc db upgrade") as caught:
        component(blank_dsn)
    assert isinstance(caught.value, PermanentError)


def test_a_database_behind_this_ragc_is_a_clear_error(dsn: str) -> None:
    with psycopg.connect(dsn) as conn:
        conn.execute("DELETE FROM ragc.schema_migrations WHERE version <> '0001'")
        conn.execute("UPDATE ragc.schema_migrations SET version = '0000'")
    needed = migrations()[-1].version
    with pytest.raises(
        NotMigratedError, match=rf"at schema revision 0000; this ragc needs revision {needed}"
    ):
        PostgresAuditLog(dsn)


def test_an_unreachable_server_names_the_dsn_without_its_password() -> None:
    dead = "postgresql://ragc:hunter2@127.0.0.1:1/warm?connect_timeout=2"
    for attempt in (
        lambda: PostgresAuditLog(dead),
        lambda: migrate(dead),
        lambda: open_pool(dead),
    ):
        with pytest.raises(StoreUnavailableError) as caught:
            attempt()
        message = caught.value.one_line()
        assert "postgresql://ragc:***@127.0.0.1:1/warm" in message
        assert "hunter2" not in message
        assert "Start it" in message


def test_a_malformed_dsn_is_a_config_error() -> None:
    with pytest.raises(StoreConfigError, match="not valid"):
        migrate("host=x nonsense_option=1 password=hunter2")


def test_wrong_credentials_are_a_config_error(dsn: str) -> None:
    missing = psycopg.conninfo.make_conninfo(dsn, dbname="ragc_no_such_db")
    with pytest.raises(StoreConfigError, match="does not exist"):
        PostgresAuditLog(missing)


def test_components_share_an_injected_pool_and_leave_it_open(pool: Pool, dsn: str) -> None:
    log = PostgresAuditLog(pool=pool)
    queue = PostgresReviewQueue(pool=pool)
    log.close()
    queue.close()
    assert not pool.closed
    owned = PostgresChangeLedger(dsn)
    owned.close()
    assert owned.pool.closed


# --- same public interface as the embedded twins -------------------------------------------


@pytest.mark.parametrize(
    ("embedded", "warm"),
    [
        (SqliteAuditLog, PostgresAuditLog),
        (SqliteReviewQueue, PostgresReviewQueue),
        (SqliteChangeLedger, PostgresChangeLedger),
        (SqliteTenantKeys, PostgresTenantKeys),
    ],
)
def test_public_methods_match_the_sqlite_twin(embedded: type[Any], warm: type[Any]) -> None:
    public = {n for n in dir(embedded) if not n.startswith("_")}
    assert public <= set(dir(warm))
    for name in public:
        mine, theirs = getattr(warm, name), getattr(embedded, name)
        if callable(theirs):
            assert inspect.signature(mine) == inspect.signature(theirs), name


# --- audit and misses -----------------------------------------------------------------------


def _event(
    ts: float, layer: str, question: str, tenant: str | None = None, **kw: Any
) -> AuditEvent:
    fields: dict[str, Any] = {
        "ts": ts,
        "tenant": tenant,
        "version": "v1",
        "layer": layer,
        "cache_key": None if layer == "SAFE" else f"k-{question}",
        "entry_id": None if layer == "SAFE" else f"e-{question}",
        "latency_ms": 1.25,
        "question": question,
        "normalized": question.lower().strip("?! "),
        "confidence": 0.5,
    }
    return AuditEvent(**(fields | kw))


def _events() -> list[AuditEvent]:
    base = datetime(2026, 11, 10, tzinfo=UTC).timestamp()
    guess = (("faq.refunds", 0.41), ("faq.shipping", 0.2))
    return [
        _event(base + 1, "L1", "How do refunds work?", "acme"),
        _event(base + 2, "SAFE", "Who won the world cup in 1998?"),
        _event(base + 3, "SAFE", "WHO WON THE WORLD CUP IN 1998", "acme", candidates=guess),
        _event(base + 4, "SAFE", "who won the world cup in 1998!", "beta"),
        _event(base + 5, "L3", "Tell me about pricing", "acme"),
        _event(base + 6, "L3", "Tell me about plans", None),
        _event(base + 7, "SAFE", "Can I pay in bitcoin?", "acme", candidates=(("faq.pay", 0.3),)),
        _event(base + 8, "SAFE", "can i pay in bitcoin", "", candidates=(("faq.pay2", 0.12),)),
        _event(base + 9, "L2", "Refund after 30 days?", "beta"),
        _event(base + 10, "SAFE", "What is the meaning of life?", "beta"),
        _event(base - 40 * 86400, "L3", "Last month's pricing", "acme"),
        _event(base - 40 * 86400, "SAFE", "An old question", "acme"),
    ]


def test_misses_summarize_like_the_sqlite_log(dsn: str, tmp_path: Path) -> None:
    embedded = SqliteAuditLog(f"sqlite:///{tmp_path / 'audit.db'}")
    warm = PostgresAuditLog(dsn)
    try:
        events = _events()
        for log in (embedded, warm):
            log.record(events[:5])
            log.record(events[5:])
            log.record([])
        since = datetime(2026, 11, 1, tzinfo=UTC).timestamp()
        for query in (
            {},
            {"tenant": "acme"},
            {"tenant": "beta"},
            {"tenant": "nobody"},
            {"since": since},
            {"tenant": "acme", "since": since, "limit": 1},
            {"limit": 2},
        ):
            assert warm.misses(**query) == embedded.misses(**query), query
        top = warm.misses()[0]
        assert (top.normalized, top.count, top.tenants) == (
            "who won the world cup in 1998",
            3,
            ("acme", "beta"),
        )
        assert (top.example, top.best_guess, top.best_score) == (
            "WHO WON THE WORLD CUP IN 1998",
            None,
            0.41,
        )
        assert warm.miss_questions() == embedded.miss_questions()
        assert warm.miss_questions(limit=2) == embedded.miss_questions(limit=2)
        now = datetime(2026, 11, 21, tzinfo=UTC)
        assert warm.l3_spent(now=now) == embedded.l3_spent(now=now) == {"acme": 1, None: 1}
        assert warm.answers(limit=5) == embedded.answers(limit=5)
        assert len(warm.answers(limit=1000)) == len(events)
    finally:
        embedded.close()
        warm.close()


def test_a_large_batch_goes_in_at_once_and_a_nul_does_not_poison_it(dsn: str) -> None:
    log = PostgresAuditLog(dsn)
    try:
        batch = [_event(NOW + i / 1000, "SAFE", f"question {i % 7}?") for i in range(5000)]
        batch.append(_event(NOW + 10, "SAFE", "nul\x00inside", normalized="nul\x00inside"))
        log.record(batch)
        summary = {m.normalized: m.count for m in log.misses(limit=100)}
        assert summary["question 0"] == 715
        assert summary["nul\ufffdinside"] == 1
        assert len(log.answers(limit=10_000)) == 5001
    finally:
        log.close()


def test_the_service_audit_writer_drains_into_postgres(dsn: str) -> None:
    log = PostgresAuditLog(dsn)
    try:
        writer = AuditWriter(log, interval=0.01, batch=50)
        for i in range(120):
            writer.record(_event(NOW + i, "L1" if i % 3 else "SAFE", f"q{i}"))
        writer.close()
        assert len(log.answers(limit=1000)) == 120
        assert len(log.misses(limit=1000)) == 40
    finally:
        log.close()


def test_the_pool_replaces_connections_the_server_dropped(dsn: str) -> None:
    log = PostgresAuditLog(dsn)
    try:
        log.record([_event(NOW, "L1", "before")])
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
        log.record([_event(NOW + 1, "L1", "after")])
        assert [e.normalized for e in log.answers()] == ["after", "before"]
    finally:
        log.close()


# --- review queue (mirrors tests/unit/test_review.py, on both backends) ---------------------


@pytest.fixture(params=["sqlite", "postgres"])
def warm(request: pytest.FixtureRequest, tmp_path: Path) -> WarmTier:
    """The warm tier on each backend: a SQLite store's file, or Postgres beside a Redis store."""
    if request.param == "sqlite":
        return WarmTier(f"sqlite:///{tmp_path / 'store.db'}")
    return WarmTier("redis://127.0.0.1:6379/0", request.getfixturevalue("dsn"))


@pytest.fixture
def queue_factory(warm: WarmTier) -> Iterator[Callable[[], ReviewQueue]]:
    """Opens queues over one shared backing store (a SQLite file or a migrated database)."""
    opened: list[ReviewQueue] = []

    def make() -> ReviewQueue:
        opened.append(warm.require(warm.review_queue(), "the review queue"))
        return opened[-1]

    yield make
    for queue in opened:
        queue.close()


def _item(entry_id: str, fingerprint: str, answer: str = "a") -> ReviewItem:
    return ReviewItem(
        entry_id=entry_id, fingerprint=fingerprint, question="q", answer=answer, score=0.5
    )


def test_review_deciding_an_unknown_id_is_invalid_input(
    queue_factory: Callable[[], ReviewQueue],
) -> None:
    with pytest.raises(InvalidInputError, match="'nope'"):
        queue_factory().decide("nope", "approved", reviewer="ana")


def test_review_resubmitting_keeps_a_decision(queue_factory: Callable[[], ReviewQueue]) -> None:
    queue = queue_factory()
    queue.submit([_item("e1", "fp")])
    decided = queue.decide("e1", "approved", reviewer="ana")
    queue.submit([_item("e1", "fp", answer="changed")])
    (item,) = queue.items()
    assert (item.status, item.answer) == ("approved", "a")
    assert item == decided
    assert set(queue.decisions()) == {("e1", "fp")}


def test_review_a_reason_for_holding_round_trips(queue_factory: Callable[[], ReviewQueue]) -> None:
    queue = queue_factory()
    reason = "duplicate question answered differently: b.html#q and a.html#q"
    queue.submit([msgspec.structs.replace(_item("e1", "fp"), reason=reason), _item("e2", "fp")])
    decided = queue.decide("e1", "approved", reviewer="ana")
    assert decided.reason == reason
    assert {i.entry_id: i.reason for i in queue.items()} == {"e1": reason, "e2": ""}


def test_review_items_filter_by_status(queue_factory: Callable[[], ReviewQueue]) -> None:
    queue = queue_factory()
    queue.submit([_item("a", "1"), _item("b", "2"), _item("c", "3")])
    queue.decide("b", "rejected", reviewer="ana")
    assert [i.entry_id for i in queue.items("pending")] == ["c", "a"]
    assert [i.entry_id for i in queue.items("rejected")] == ["b"]
    assert [i.entry_id for i in queue.items("approved")] == []
    assert [i.entry_id for i in queue.items()] == ["c", "b", "a"]


def test_review_an_edit_replaces_the_answer(queue_factory: Callable[[], ReviewQueue]) -> None:
    queue = queue_factory()
    queue.submit([_item("e1", "fp")])
    decided = queue.decide("e1", "approved", reviewer="ana", answer="A better answer.")
    assert (decided.status, decided.reviewer, decided.answer) == (
        "approved",
        "ana",
        "A better answer.",
    )
    assert datetime.fromisoformat(decided.decided_at).tzinfo is not None
    assert queue.decisions()[("e1", "fp")] == decided


def test_review_decisions_persist_across_connections(
    queue_factory: Callable[[], ReviewQueue],
) -> None:
    first = queue_factory()
    first.submit([_item("e1", "fp")])
    first.decide("e1", "approved", reviewer="ana")
    first.close()
    assert queue_factory().decisions()[("e1", "fp")].reviewer == "ana"


def test_review_a_decision_goes_to_the_newest_fingerprint(
    queue_factory: Callable[[], ReviewQueue],
) -> None:
    for old, new in (("a", "b"), ("b", "a")):
        queue = queue_factory()
        entry = f"e-{old}{new}"
        queue.submit([_item(entry, old)])
        queue.decide(entry, "approved", reviewer="ana")
        queue.submit([_item(entry, new)])
        assert queue.decide(entry, "rejected", reviewer="ana").fingerprint == new
        assert {(i.fingerprint, i.status) for i in queue.items() if i.entry_id == entry} == {
            (old, "approved"),
            (new, "rejected"),
        }


def test_review_an_unknown_status_is_refused(dsn: str) -> None:
    queue = PostgresReviewQueue(dsn)
    try:
        queue.submit([_item("e1", "fp")])
        with pytest.raises(InvalidInputError, match="unknown review status"):
            queue.decide("e1", "maybe", reviewer="ana")  # type: ignore[arg-type]
    finally:
        queue.close()


# --- webhook change ledger, on both backends -------------------------------------------------


@pytest.fixture
def ledger(warm: WarmTier) -> Iterator[ChangeLedger]:
    opened = warm.require(warm.ledger(), "the ledger")
    yield opened
    opened.close()


def _record(ledger: ChangeLedger, delivery: str, *paths: str) -> None:
    ledger.record(delivery, signed_at=NOW, knowledge="examples", changed=paths or ("faq.jsonl",))


def test_a_delivery_is_recorded_once_and_a_replay_is_refused(ledger: ChangeLedger) -> None:
    assert not ledger.seen("d1")
    entry = ledger.record("d1", signed_at=NOW, knowledge="examples", changed=["a.md", "b/c.md"])
    assert ledger.seen("d1")
    assert (entry.status, entry.changed, entry.signed_at) == ("recorded", ("a.md", "b/c.md"), NOW)
    with pytest.raises(DuplicateDeliveryError, match="already received at 20"):
        _record(ledger, "d1")
    assert ledger.get("d1") == entry
    assert ledger.get("nope") is None
    assert ledger.entries() == [entry]


def test_concurrent_replays_record_exactly_one(dsn: str) -> None:
    """Eight ledgers (eight pools) insert the same id at once: exactly one is recorded."""
    ledgers = [PostgresChangeLedger(dsn) for _ in range(8)]
    start = threading.Barrier(len(ledgers))
    outcomes: list[str] = []

    def attempt(ledger: ChangeLedger) -> None:
        start.wait()
        try:
            _record(ledger, "same")
            outcomes.append("recorded")
        except DuplicateDeliveryError:
            outcomes.append("refused")

    threads = [threading.Thread(target=attempt, args=(x,)) for x in ledgers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    try:
        assert sorted(outcomes) == ["recorded"] + ["refused"] * 7
        assert len(ledgers[0].entries()) == 1
    finally:
        for opened in ledgers:
            opened.close()


def test_what_was_recorded_but_not_dispatched_survives_a_crash(warm: WarmTier) -> None:
    first = warm.require(warm.ledger(), "the ledger")
    for delivery in ("a", "b", "c"):
        _record(first, delivery)
    first.mark("a", "dispatched", "event 1")
    first.mark("c", "failed", "nothing to recompile")
    first.close()

    reopened = warm.require(warm.ledger(), "the ledger")
    try:
        assert [d.delivery for d in reopened.pending()] == ["b"]
        assert [d.delivery for d in reopened.entries(limit=2)] == ["c", "b"]
        a = reopened.get("a")
        assert a is not None
        assert (a.status, a.detail) == ("dispatched", "event 1")
    finally:
        reopened.close()


def test_marking_checks_the_id_and_the_status(ledger: ChangeLedger) -> None:
    _record(ledger, "d")
    with pytest.raises(InvalidInputError, match="no webhook delivery"):
        ledger.mark("unknown", "done")
    with pytest.raises(InvalidInputError, match="unknown delivery status"):
        ledger.mark("d", "finished")  # type: ignore[arg-type]
    ledger.mark("d", "done", "ok")
    got = ledger.get("d")
    assert got is not None
    assert (got.status, got.detail) == ("done", "ok")


# --- tenant keys, on both backends -----------------------------------------------------------


@pytest.fixture
def tenant_keys(warm: WarmTier) -> Iterator[TenantKeys]:
    opened = warm.require(warm.tenant_keys(), "tenant keys")
    yield opened
    opened.close()


def test_a_key_is_stored_only_as_its_digest_and_maps_to_its_tenant(
    tenant_keys: TenantKeys,
) -> None:
    issued = tenant_keys.issue("acme", label="support widget")
    other = tenant_keys.issue("beta")
    assert issued.key.startswith(KEY_PREFIX)
    assert issued.key != other.key
    assert tenant_keys.live() == {digest_key(issued.key): "acme", digest_key(other.key): "beta"}
    listed = tenant_keys.issued("acme")
    assert [(k.key_id, k.tenant, k.label) for k in listed] == [
        (issued.info.key_id, "acme", "support widget")
    ]
    assert issued.info.key_id == digest_key(issued.key)[:12]


def test_a_revoked_key_leaves_the_live_map_and_stays_listed(tenant_keys: TenantKeys) -> None:
    issued = tenant_keys.issue("acme")
    first = tenant_keys.revoke(issued.info.key_id)
    assert first.revoked_at is not None
    assert tenant_keys.live() == {}
    assert tenant_keys.revoke(issued.info.key_id).revoked_at == first.revoked_at
    assert [k.revoked_at for k in tenant_keys.issued()] == [first.revoked_at]
    with pytest.raises(InvalidInputError, match="no tenant key 'nope'"):
        tenant_keys.revoke("nope")


@pytest.mark.parametrize(("tenant", "label"), [("acme\n", ""), ("Acme", ""), ("acme", "a\nb")])
def test_a_key_for_a_bad_tenant_or_label_is_refused(
    tenant_keys: TenantKeys, tenant: str, label: str
) -> None:
    with pytest.raises(InvalidInputError):
        tenant_keys.issue(tenant, label=label)
    assert tenant_keys.issued() == []


# --- version catalogue ----------------------------------------------------------------------


def _manifest(version: str, checksum: str = "c0ffee") -> Manifest:
    return Manifest(
        version=version, created_at="2026-11-21T00:00:00Z", counts={"exact": 3}, checksum=checksum
    )


def test_the_catalogue_records_each_version_once(dsn: str) -> None:
    catalog = PostgresVersionCatalog(dsn)
    try:
        plans = SlotSpec(name="plan", kind="enum", values=("pro", "basic"))
        intents = [
            IntentTemplate(intent="refund.window", template="{plan}", slots=(plans,)),
            IntentTemplate(intent="refund.window", template="{plan}", slots=(plans,), tenant="x"),
            IntentTemplate(intent="hours", template="9-5"),
        ]
        assert catalog.record(_manifest("v1"), intents=intents)
        assert catalog.record(_manifest("v2"))
        assert not catalog.record(_manifest("v1"))  # the same manifest again: a no-op
        with pytest.raises(ImmutableVersionError):
            catalog.record(_manifest("v1", checksum="different"))
        assert catalog.get("v1") == _manifest("v1")
        assert catalog.get("v9") is None
        assert [m.version for m in catalog.list()] == ["v1", "v2"]
        assert catalog.slot_values("v1") == {"refund.window": {"plan": ("basic", "pro")}}
        assert catalog.slot_values("v2") == {}
    finally:
        catalog.close()


# --- ragc db ----------------------------------------------------------------------------------


def test_ragc_db_upgrade_applies_then_reports_up_to_date(blank_dsn: str) -> None:
    result = runner.invoke(app, ["db", "upgrade", "--dsn", blank_dsn])
    assert result.exit_code == 0, result.output
    assert "applied 0001_warm_tier" in result.stdout
    again = runner.invoke(app, ["db", "upgrade", "--json"], env={"RAGC_WARM_DSN": blank_dsn})
    assert again.exit_code == 0, again.output
    assert json.loads(again.stdout) | {"dsn": ""} == {
        "dsn": "",
        "applied": [],
        "revision": migrations()[-1].version,
    }
    status = runner.invoke(app, ["db", "status", "--dsn", blank_dsn, "--json"])
    assert status.exit_code == 0, status.output
    assert json.loads(status.stdout)["pending"] == []
    assert "up to date" in runner.invoke(app, ["db", "upgrade", "--dsn", blank_dsn]).stdout


def test_ragc_db_status_lists_pending_migrations(blank_dsn: str) -> None:
    result = runner.invoke(app, ["db", "status", "--dsn", blank_dsn])
    assert result.exit_code == 0, result.output
    assert "revision (none)" in result.stdout
    assert "pending 0001_warm_tier" in result.stdout
    assert "ragc db upgrade" in result.stdout


def test_ragc_db_fails_cleanly_without_a_server_or_a_dsn() -> None:
    dead = "postgresql://ragc:hunter2@127.0.0.1:1/warm"
    result = runner.invoke(app, ["db", "upgrade", "--dsn", dead])
    assert result.exit_code == 1
    assert "ragc:***@127.0.0.1:1" in result.stderr
    assert "hunter2" not in result.stderr
    missing = runner.invoke(app, ["db", "status"], env={"RAGC_WARM_DSN": ""})
    assert missing.exit_code == 1
    assert "RAGC_WARM_DSN" in missing.stderr
