"""The auto-FAQ loop end to end: a question users keep asking that the service could not
answer is drafted by the next compile, held for review, and served once a person approves it."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from flows.compile import CompileParams, CompileResult, compile_knowledge
from schemas.normalize import canonical_text
from serving.runtime import VersionCache
from stores import open_store
from stores.audit import AuditEvent, SqliteAuditLog
from stores.review import SqliteReviewQueue
from tasks.auto_faq import miss_entry_id

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("prefect_harness")]

ASKED = "can I bring my bike on the night bus"
ONCE = "do you sell gift cards"
PAGES = {
    "travel.md": """# Travelling with us

## Bicycles

Folding bicycles travel free on every bus. Full-size bikes are allowed on night buses only,
in the rack at the rear, for a fee of two euros.

## Luggage

Each passenger may bring one suitcase and one small bag on board.
""",
}


def _log_misses(url: str, version: str) -> None:
    log = SqliteAuditLog(url)
    events = [
        AuditEvent(
            ts=time.time(),
            tenant="acme",
            version=version,
            layer="SAFE",
            cache_key=None,
            entry_id=None,
            latency_ms=1.0,
            question=question,
            normalized=canonical_text(question),
            confidence=0.1,
        )
        for question in (ASKED, ASKED, ASKED, ONCE)
    ]
    try:
        log.record(events)
    finally:
        log.close()


def _compile(root: Path, url: str) -> CompileResult:
    return compile_knowledge(
        CompileParams(
            knowledge=str(root / "knowledge"),
            store=url,
            build_dir=str(root / "build"),
            publish=True,
        )
    )


def _serve(url: str, version: str, question: str) -> tuple[str, str | None]:
    store = open_store(url)
    try:
        answer = VersionCache(store).get(version).answer(question)  # as the service answers
    finally:
        store.close()
    return answer.layer, answer.entry_id


def test_a_frequent_miss_is_drafted_held_and_served_once_approved(tmp_path: Path) -> None:
    (tmp_path / "knowledge").mkdir()
    for name, text in PAGES.items():
        (tmp_path / "knowledge" / name).write_text(text, "utf-8")
    url = f"sqlite:///{tmp_path / 'knowledge.db'}"
    draft_id = miss_entry_id(ASKED)

    first = _compile(tmp_path, url)
    assert first.auto_faq == {}  # nothing logged yet
    _log_misses(url, first.version)

    second = _compile(tmp_path, url)
    queue = SqliteReviewQueue(url)
    try:
        held = {item.entry_id: item for item in queue.items("pending")}
        assert set(held) == {draft_id}  # the miss asked once is not drafted
        assert "two euros" in held[draft_id].answer
        assert second.auto_faq == {"pending": 1}
        assert _serve(url, second.version, ASKED)[1] != draft_id  # held: not served
        queue.decide(draft_id, "approved", reviewer="ana")
    finally:
        queue.close()

    third = _compile(tmp_path, url)
    assert third.auto_faq == {"approved": 1}
    assert _serve(url, third.version, ASKED) == ("L1", draft_id)
