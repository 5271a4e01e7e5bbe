"""The knowledge-changed webhook's parts: signature check, change ledger, dispatcher."""

from __future__ import annotations

import sqlite3
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from schemas.errors import InvalidInputError
from serving.dispatch import Dispatcher, dispatch_mode, knowledge_name, recompile_command
from serving.dto import KnowledgeChangedRequest
from serving.signatures import SignatureError, delivery_id, sign, verify_signature
from stores.ledger import DuplicateDeliveryError, SqliteChangeLedger

pytestmark = [pytest.mark.unit]

SECRET = "whsec-test"
NOW = 1_750_000_000
BODY = b'{"changed": ["faq.jsonl"]}'

secrets = st.text(min_size=1, max_size=40)
bodies = st.binary(max_size=300)


def problem(secret: str | list[str], header: str | None, body: bytes = BODY, **kw: int) -> str:
    with pytest.raises(SignatureError) as caught:
        verify_signature(secret, header, body, now=kw.pop("now", NOW), **kw)
    return caught.value.problem


# -- verify_signature ----------------------------------------------------------------------------


@given(secret=secrets, body=bodies, skew=st.integers(min_value=-300, max_value=300))
def test_a_fresh_signature_of_the_exact_body_verifies(secret: str, body: bytes, skew: int) -> None:
    header = sign(secret, body, timestamp=NOW + skew)
    assert verify_signature(secret, header, body, now=NOW) == NOW + skew


@pytest.mark.parametrize("header", [None, "", "   "])
def test_a_missing_header_is_refused(header: str | None) -> None:
    assert problem(SECRET, header) == "missing"


@pytest.mark.parametrize(
    "header",
    [
        "garbage",
        "t=1750000000",
        "v1=" + "a" * 64,
        "t=,v1=" + "a" * 64,
        "t=abc,v1=" + "a" * 64,
        "t=-5,v1=" + "a" * 64,
        "t=1750000000,t=1750000001,v1=" + "a" * 64,
        "t=1750000000,v1=xyz",
        "t=1750000000,v1=" + "a" * 63,
        "t=1750000000,=x,v1=" + "a" * 64,
        "t=1750000000," + ",".join(["v1=" + "a" * 64] * 17),
        "t=\uff11\uff17\uff15\uff10,v1=" + "a" * 64,  # fullwidth digits: digits, not ASCII
    ],
)
def test_a_malformed_header_is_refused(header: str) -> None:
    assert problem(SECRET, header) == "malformed"


@given(header=st.text(max_size=200), body=bodies)
def test_no_header_text_gets_past_without_the_secret(header: str, body: bytes) -> None:
    with pytest.raises(SignatureError):
        verify_signature(SECRET, header, body, now=NOW)


def test_a_stale_signature_is_refused_past_the_tolerance_only() -> None:
    assert verify_signature(SECRET, sign(SECRET, BODY, timestamp=NOW - 300), BODY, now=NOW)
    with pytest.raises(SignatureError, match="stale: signed 301 s ago") as caught:
        verify_signature(SECRET, sign(SECRET, BODY, timestamp=NOW - 301), BODY, now=NOW)
    assert caught.value.problem == "stale"
    assert problem(SECRET, sign(SECRET, BODY, timestamp=NOW - 61), tolerance=60) == "stale"


def test_a_signature_from_the_future_is_refused() -> None:
    with pytest.raises(SignatureError, match="301 s in the future") as caught:
        verify_signature(SECRET, sign(SECRET, BODY, timestamp=NOW + 301), BODY, now=NOW)
    assert caught.value.problem == "stale"


@given(other=secrets)
def test_a_wrong_secret_is_refused(other: str) -> None:
    header = sign(other, BODY, timestamp=NOW)
    if other != SECRET:
        assert problem(SECRET, header) == "mismatch"


@given(body=bodies, tampered=bodies)
def test_a_changed_body_is_refused(body: bytes, tampered: bytes) -> None:
    header = sign(SECRET, body, timestamp=NOW)
    if tampered != body:
        assert problem(SECRET, header, tampered) == "mismatch"


def test_the_timestamp_is_signed_too() -> None:
    mac = sign(SECRET, BODY, timestamp=NOW).split("v1=")[1]
    assert problem(SECRET, f"t={NOW + 1},v1={mac}") == "mismatch"


def test_rotated_keys_verify_in_both_directions() -> None:
    old, new = "old-key", "new-key"
    both = f"t={NOW},v1={sign(old, BODY, timestamp=NOW).split('v1=')[1]}," + (
        f"v1={sign(new, BODY, timestamp=NOW).split('v1=')[1]}"
    )
    # the sender signs with both keys: a receiver holding either accepts
    assert verify_signature(old, both, BODY, now=NOW) == NOW
    assert verify_signature(new, both, BODY, now=NOW) == NOW
    # the receiver holds both keys: a sender using either is accepted
    for key in (old, new):
        assert verify_signature([old, new], sign(key, BODY, timestamp=NOW), BODY, now=NOW) == NOW
    assert problem(["other"], both) == "mismatch"


def test_unknown_schemes_and_spaces_and_upper_case_hex_are_accepted() -> None:
    mac = sign(SECRET, BODY, timestamp=NOW).split("v1=")[1]
    header = f" t={NOW} , v0=whatever, v1={mac.upper()} "
    assert verify_signature(SECRET, header, BODY, now=NOW) == NOW


def test_an_empty_secret_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="non-empty secret"):
        verify_signature("", sign("x", BODY, timestamp=NOW), BODY, now=NOW)


@given(t=st.integers(min_value=0, max_value=10**11), body=bodies)
def test_the_delivery_id_is_the_hash_of_the_signed_payload(t: int, body: bytes) -> None:
    assert delivery_id(t, body) == delivery_id(t, body)
    assert len(delivery_id(t, body)) == 64
    assert delivery_id(t, body) != delivery_id(t + 1, body)
    assert delivery_id(t, body) != delivery_id(t, body + b" ")


# -- small helpers --------------------------------------------------------------------------------


def test_knowledge_names_and_modes_and_the_recompile_command() -> None:
    assert knowledge_name(None) == "default"
    assert knowledge_name("examples") == "examples"
    assert knowledge_name("/srv/kb/Help Center/") == "Help-Center"
    assert dispatch_mode({}) == "embedded"
    assert dispatch_mode({"PREFECT_API_URL": " "}) == "embedded"
    assert dispatch_mode({"PREFECT_API_URL": "http://127.0.0.1:4200/api"}) == "prefect-event"
    assert recompile_command("kb", "sqlite:///k.db") == [
        sys.executable,
        *("-m", "ragc", "compile", "kb", "--publish", "--store", "sqlite:///k.db"),
    ]


@pytest.mark.parametrize(
    "changed",
    [[], ["../secrets"], ["a/../../b"], ["/etc/passwd"], ["C:/x"], ["a\\b"], [""], [" "], ["a\0"]],
)
def test_changed_paths_must_be_relative_inside_the_folder(changed: list[str]) -> None:
    with pytest.raises(msgspec.ValidationError):
        msgspec.json.decode(msgspec.json.encode({"changed": changed}), type=KnowledgeChangedRequest)


def test_a_change_lists_at_most_1000_paths_and_a_valid_name() -> None:
    ok = msgspec.json.decode(
        b'{"changed": ["faq.jsonl", "help/a b.md", "./x.md"], "knowledge": "examples"}',
        type=KnowledgeChangedRequest,
    )
    assert ok.changed == ["faq.jsonl", "help/a b.md", "./x.md"]
    msgspec.convert({"changed": ["a"] * 1000}, KnowledgeChangedRequest)
    for bad in ({"changed": ["a"] * 1001}, {"changed": ["a"], "knowledge": "a b"}):
        with pytest.raises(msgspec.ValidationError):
            msgspec.convert(bad, KnowledgeChangedRequest)


# -- the change ledger ----------------------------------------------------------------------------


@pytest.fixture
def url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'knowledge.db'}"


@pytest.fixture
def ledger(url: str) -> Iterator[SqliteChangeLedger]:
    opened = SqliteChangeLedger(url)
    yield opened
    opened.close()


def record(ledger: SqliteChangeLedger, delivery: str, *paths: str) -> None:
    ledger.record(delivery, signed_at=NOW, knowledge="examples", changed=paths or ("faq.jsonl",))


def test_a_delivery_is_recorded_once_and_a_replay_is_refused(ledger: SqliteChangeLedger) -> None:
    assert not ledger.seen("d1")
    entry = ledger.record("d1", signed_at=NOW, knowledge="examples", changed=["a.md", "b/c.md"])
    assert ledger.seen("d1")
    assert (entry.status, entry.changed, entry.signed_at) == ("recorded", ("a.md", "b/c.md"), NOW)
    with pytest.raises(DuplicateDeliveryError, match="already received at 20"):
        record(ledger, "d1")
    assert ledger.get("d1") == entry
    assert len(ledger.entries()) == 1


def test_concurrent_replays_record_exactly_one(url: str) -> None:
    """Many connections insert the same id at once: the UNIQUE key admits exactly one."""
    ledgers = [SqliteChangeLedger(url) for _ in range(8)]
    start = threading.Barrier(len(ledgers))
    outcomes: list[str] = []

    def attempt(ledger: SqliteChangeLedger) -> None:
        start.wait()
        try:
            record(ledger, "same")
            outcomes.append("recorded")
        except DuplicateDeliveryError:
            outcomes.append("refused")

    threads = [threading.Thread(target=attempt, args=(x,)) for x in ledgers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for opened in ledgers:
        opened.close()
    assert sorted(outcomes) == ["recorded"] + ["refused"] * 7


def test_what_was_recorded_but_not_dispatched_survives_a_crash(url: str) -> None:
    first = SqliteChangeLedger(url)
    record(first, "a")
    record(first, "b")
    record(first, "c")
    first.mark("a", "dispatched", "event 1")
    first.mark("c", "failed", "nothing to recompile")
    first.close()  # the process dies before it dispatches "b"

    reopened = SqliteChangeLedger(url)
    assert [d.delivery for d in reopened.pending()] == ["b"]
    assert [d.delivery for d in reopened.entries(limit=2)] == ["c", "b"]
    assert reopened.get("a") is not None
    assert reopened.get("a").status == "dispatched"  # type: ignore[union-attr]
    reopened.close()


def test_the_ledger_lives_in_its_own_tables_of_the_store_file(url: str, tmp_path: Path) -> None:
    SqliteChangeLedger(url).close()
    with sqlite3.connect(tmp_path / "knowledge.db") as db:
        tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert "webhook_deliveries" in tables


def test_marking_checks_the_id_and_the_status(ledger: SqliteChangeLedger) -> None:
    record(ledger, "d")
    with pytest.raises(InvalidInputError, match="no webhook delivery"):
        ledger.mark("unknown", "done")
    with pytest.raises(InvalidInputError, match="unknown delivery status"):
        ledger.mark("d", "finished")  # type: ignore[arg-type]
    ledger.mark("d", "done", "ok")
    assert (ledger.get("d").status, ledger.get("d").detail) == ("done", "ok")  # type: ignore[union-attr]


# -- the dispatcher, embedded mode (real subprocesses, quick fake commands) ----------------------

QUICK = "import sys; print('compiling', *sys.argv[1:]); sys.exit(int(sys.argv[3]))"


def quick(code: int) -> object:
    def command(knowledge: str, store: str) -> list[str]:
        return [sys.executable, "-c", QUICK, knowledge, store, str(code)]

    return command


def dispatcher(ledger: SqliteChangeLedger, url: str, command: object, **kw: object) -> Dispatcher:
    return Dispatcher(
        ledger,
        store=url,
        knowledge=kw.pop("knowledge", "kb"),  # type: ignore[arg-type]
        mode="embedded",
        command=command,  # type: ignore[arg-type]
    )


def test_pending_deliveries_are_recompiled_at_start_up(
    ledger: SqliteChangeLedger, url: str
) -> None:
    record(ledger, "a")
    record(ledger, "b")
    started = dispatcher(ledger, url, quick(0))
    assert started.dispatch_pending() == 2
    assert started.wait(20)
    started.close()
    assert started.runs == 1  # one recompile covers both
    assert {d.status for d in ledger.entries()} == {"done"}
    assert ledger.pending() == []


def test_a_failed_recompile_is_marked_failed_with_its_output(
    ledger: SqliteChangeLedger, url: str
) -> None:
    record(ledger, "a")
    failing = dispatcher(ledger, url, quick(3))
    failing.dispatch(ledger.pending()[0])
    assert failing.wait(20)
    failing.close()
    entry = ledger.get("a")
    assert entry is not None
    assert entry.status == "failed"
    assert entry.detail is not None
    assert "exited with code 3" in entry.detail
    assert f"compiling kb {url} 3" in entry.detail


def test_a_command_that_cannot_start_is_marked_failed(ledger: SqliteChangeLedger, url: str) -> None:
    record(ledger, "a")
    missing = dispatcher(ledger, url, lambda k, s: [str(Path(s).parent / "no-such-program")])
    result = missing.dispatch(ledger.pending()[0])
    missing.close()
    assert result.status == "failed"
    assert "did not start" in (result.detail or "")


def test_without_a_knowledge_folder_the_change_is_recorded_as_failed(
    ledger: SqliteChangeLedger, url: str
) -> None:
    record(ledger, "a")
    idle = dispatcher(ledger, url, quick(0), knowledge=None)
    result = idle.dispatch(ledger.pending()[0])
    idle.close()
    assert result.status == "failed"
    assert "RAGC_KNOWLEDGE is not set" in (result.detail or "")
    assert idle.runs == 0
    assert ledger.get("a").status == "failed"  # type: ignore[union-attr]


def test_close_stops_a_long_recompile_reaps_it_and_keeps_its_changes(
    ledger: SqliteChangeLedger, url: str
) -> None:
    record(ledger, "a")
    slow = dispatcher(
        ledger, url, lambda k, s: [sys.executable, "-c", "import time; time.sleep(60)"]
    )
    slow.dispatch(ledger.pending()[0])
    run = slow._run
    assert run is not None
    assert ledger.get("a").status == "dispatched"  # type: ignore[union-attr]
    slow.close(timeout=0.2)
    assert run.process.returncode is not None  # reaped: no zombie left behind
    assert not slow.running
    # not finished, so dispatched again at the next start
    assert [d.delivery for d in ledger.pending()] == ["a"]
    record(ledger, "b")
    closed = slow.dispatch(ledger.get("b"))  # type: ignore[arg-type]
    assert closed.status == "recorded"
    assert slow.runs == 1


def test_the_recompile_gets_no_service_secrets(
    ledger: SqliteChangeLedger, url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RAGC_WEBHOOK_SECRET", "hush")
    monkeypatch.setenv("RAGC_ADMIN_TOKEN", "hush")
    script = (
        "import os, sys; env = os.environ.get; "
        "print('env', env('RAGC_WEBHOOK_SECRET'), env('RAGC_ADMIN_TOKEN')); sys.exit(1)"
    )
    record(ledger, "a")
    probe = dispatcher(ledger, url, lambda k, s: [sys.executable, "-c", script])
    probe.dispatch(ledger.pending()[0])
    assert probe.wait(20)
    probe.close()
    assert "env None None" in (ledger.get("a").detail or "")  # type: ignore[union-attr]


@pytest.mark.parametrize("name", ["examples\n", "examples\r\n", "ex amples", ""])
def test_a_knowledge_name_is_the_whole_string(name: str) -> None:
    body = msgspec.json.encode({"changed": ["faq.jsonl"], "knowledge": name})
    with pytest.raises(msgspec.ValidationError, match="knowledge"):
        msgspec.json.decode(body, type=KnowledgeChangedRequest)
    assert (
        msgspec.json.decode(
            msgspec.json.encode({"changed": ["faq.jsonl"], "knowledge": "examples"}),
            type=KnowledgeChangedRequest,
        ).knowledge
        == "examples"
    )
