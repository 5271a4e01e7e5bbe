"""Duplicate questions end to end: a tiny folder where two pages answer the same questions."""

from __future__ import annotations

from pathlib import Path

import pytest

from flows.compile import CompileParams, CompileResult, compile_knowledge
from schemas.build import RegressionCase
from schemas.evaluation import evaluate, summarize
from serving.runtime import VersionCache
from stores import open_store
from stores.review import SqliteReviewQueue

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("prefect_harness")]

SYMPTOMS = "What are the symptoms of the flu?"
CONTACT = "What should I do after close contact with a sick person?"
PAGES = {
    "agency-a.md": f"""# Agency A: flu questions

## {SYMPTOMS}

Fever, a dry cough and tiredness are the most common symptoms of the flu.

## {CONTACT}

Stay at home for five days and watch for a fever.
""",
    "agency-b.md": f"""# Agency B: flu questions

## {SYMPTOMS}

Fever, a dry cough and tiredness are the most common symptoms of the flu.

## {CONTACT}

Call your local public health office, who will tell you which test to take.

## Can pets catch the flu?

Dogs and cats rarely catch human flu viruses.
""",
}


@pytest.fixture(scope="module")
def flu(tmp_path_factory: pytest.TempPathFactory, prefect_harness: None) -> tuple[Path, str]:
    """The two pages compiled and published: the folder's root and the store URL."""
    root = tmp_path_factory.mktemp("duplicates")
    knowledge = root / "knowledge"
    knowledge.mkdir()
    for name, text in PAGES.items():
        (knowledge / name).write_text(text, "utf-8")
    return root, f"sqlite:///{root / 'knowledge.db'}"


@pytest.fixture(scope="module")
def result(flu: tuple[Path, str]) -> CompileResult:
    root, url = flu
    return compile_knowledge(
        CompileParams(
            knowledge=str(root / "knowledge"),
            store=url,
            build_dir=str(root / "build"),
            publish=True,
        )
    )


def test_the_compile_reports_the_same_and_the_conflicting_question(result: CompileResult) -> None:
    assert result.published
    by_question = {g.members[0].question: g for g in result.duplicates}
    assert set(by_question) == {SYMPTOMS, CONTACT}
    same, conflict = by_question[SYMPTOMS], by_question[CONTACT]
    assert same.verdict == "same"
    assert [(m.section.path, m.status) for m in same.members] == [
        ("agency-a.md", "canonical"),
        ("agency-b.md", "merged"),
    ]
    assert conflict.verdict == "conflict"
    assert [(m.section.path, m.status) for m in conflict.members] == [
        ("agency-a.md", "canonical"),
        ("agency-b.md", "held"),
    ]
    assert result.entries.get("pending") == 1


def test_the_conflict_waits_in_the_review_queue_naming_both_sections(
    result: CompileResult, flu: tuple[Path, str]
) -> None:
    queue = SqliteReviewQueue(flu[1])
    try:
        (held,) = queue.items("pending")
    finally:
        queue.close()
    assert held.question == CONTACT
    assert "agency-a.md#" in held.reason
    assert "agency-b.md#" in held.reason
    (conflict,) = (g for g in result.duplicates if g.verdict == "conflict")
    assert held.entry_id == conflict.members[1].entry_id


def test_the_group_is_served_by_its_canonical_entry_with_the_duplicate_as_alternate(
    result: CompileResult, flu: tuple[Path, str]
) -> None:
    store = open_store(flu[1])
    try:
        snapshot = store.load(result.version)
        ready = VersionCache(store).get(result.version)  # as the service loads it
    finally:
        store.close()
    loaded = ready.loaded
    assert snapshot.manifest.duplicates == result.duplicates
    answer = ready.answer(SYMPTOMS)
    assert answer.layer == "L1"
    assert [s.path for s in answer.sources] == ["agency-a.md"]
    (intent,) = (i for i in snapshot.intents if i.intent == answer.entry_id)
    assert [s.path for s in intent.alternates] == ["agency-b.md"]
    assert not any(i.intent.startswith("agency-b.what-are") for i in snapshot.intents)

    strict_b = RegressionCase(query=SYMPTOMS, accept=({"doc_id": "agency-b", "section": SYMPTOMS},))
    held_b = RegressionCase(query=CONTACT, accept=({"doc_id": "agency-b", "section": CONTACT},))
    outcomes = evaluate(loaded, [strict_b, held_b], route=ready.route)
    assert outcomes[0].duplicate is not None
    assert not outcomes[0].correct
    assert outcomes[1].duplicate is None  # a held conflict is no equivalent
    report = summarize(outcomes)
    assert report.duplicate_served == 1
    assert report.coverage == 0.0
    assert report.coverage_lenient == 0.5
