"""Stage 7b — duplicate groups: what is grouped, which entry serves a group, and the merge."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import PurePosixPath

import msgspec
import numpy as np
import pytest

from schemas.arrays import Floats
from schemas.build import (
    Chunk,
    Entry,
    EntryStatus,
    IngestReport,
    Question,
    QuestionOrigin,
    SourceDoc,
)
from schemas.manifest import DuplicateGroup
from schemas.records import Source
from tasks.artifacts import SnapshotInputs, build_snapshot
from tasks.duplicates import (
    ANSWER_THRESHOLD,
    QUESTION_THRESHOLD,
    find_duplicates,
    merge_duplicates,
)

ANSWER = "Fever, a dry cough and tiredness."


class Vectors:
    """Sentence vectors chosen by the test: a text in ``table`` gets its vector, any other text
    a direction of its own (cosine 0 with everything else)."""

    def __init__(self, table: dict[str, Sequence[float]] | None = None) -> None:
        self.table = dict(table or {})
        self.own: dict[str, int] = {}
        self.calls: list[list[str]] = []

    def __call__(self, texts: Sequence[str]) -> Floats:
        self.calls.append(list(texts))
        rows = np.zeros((len(texts), 96), dtype=np.float32)
        for i, text in enumerate(texts):
            if text in self.table:
                given = self.table[text]
                rows[i, : len(given)] = given
            else:
                rows[i, 8 + self.own.setdefault(text, len(self.own))] = 1.0
        unit: Floats = rows / np.linalg.norm(rows, axis=1, keepdims=True)
        return unit


def _at(cosine: float) -> tuple[float, float]:
    """A unit vector at ``cosine`` from ``(1, 0)``."""
    return (cosine, math.sqrt(1 - cosine**2))


class Knowledge:
    """Made-up documents: one chunk, question and answered entry per section."""

    def __init__(self) -> None:
        self.chunks: list[Chunk] = []
        self.questions: list[Question] = []
        self.entries: list[Entry] = []

    def section(
        self,
        path: str,
        question: str,
        answer: str = ANSWER,
        *,
        order: int = 0,
        origin: QuestionOrigin = "heading",
        status: EntryStatus = "pending",
        paraphrases: tuple[str, ...] = (),
    ) -> Entry:
        doc_id = PurePosixPath(path).stem
        anchor = f"s{order}-{len(self.chunks)}"
        chunk = Chunk(
            id=f"chunk-{len(self.chunks):04d}",
            doc_id=doc_id,
            path=path,
            section=question,
            anchor=anchor,
            heading_path=(question,),
            text=answer,
            order=order,
        )
        entry = Entry(
            id=f"{doc_id}.{anchor}",
            question=question,
            answer=answer,
            sources=(Source(doc_id=doc_id, path=path, section=question, anchor=anchor),),
            paraphrases=paraphrases,
            origin=origin,
            score=1.0,
            status=status,
            fingerprint=f"fp-{doc_id}-{anchor}",
        )
        self.chunks.append(chunk)
        self.questions.append(
            Question(entry_id=entry.id, text=question, origin=origin, anchor_chunk=chunk.id)
        )
        self.entries.append(entry)
        return entry

    def find(self, vectors: Vectors | None = None, **thresholds: float) -> list[DuplicateGroup]:
        report = find_duplicates(
            self.entries, self.questions, self.chunks, vectors or Vectors(), **thresholds
        )
        return list(report.groups)


def test_the_same_question_with_the_same_answer_in_two_files_is_merged() -> None:
    kb = Knowledge()
    who = kb.section("who/faq.html", "What are the symptoms of COVID-19?")
    cdc = kb.section("cdc/faq.html", "What are the symptoms of COVID-19?")
    kb.section("cdc/faq.html", "How does it spread?", "Through droplets.", order=1)

    (group,) = kb.find()

    assert group.verdict == "same"
    assert group.reason == "the same question"
    assert group.canonical == cdc.id  # the earliest path
    assert [(m.entry_id, m.status) for m in group.members] == [
        (cdc.id, "canonical"),
        (who.id, "merged"),
    ]
    assert group.members[1].section == who.sources[0]
    assert group.alternates == (who.sources[0],)


def test_the_same_question_with_another_answer_is_a_conflict_held_for_review() -> None:
    kb = Knowledge()
    first = kb.section("a.html", "What should I do after close contact?", "Stay home 14 days.")
    second = kb.section("b.html", "What should I do after close contact?", "Call your doctor.")

    (group,) = kb.find()

    assert group.verdict == "conflict"
    assert group.canonical == first.id
    assert [m.status for m in group.members] == ["canonical", "held"]
    assert group.members[1].entry_id == second.id
    assert group.members[1].answer_similarity < ANSWER_THRESHOLD
    assert group.alternates == ()


def test_answers_alike_in_meaning_count_as_the_same_answer() -> None:
    kb = Knowledge()
    kb.section("a.html", "What is SARS-CoV-2?", "It is the name of the new virus.")
    kb.section("b.html", "What is SARS-CoV-2?", "The new virus was named SARS-CoV-2.")
    vectors = Vectors(
        {
            "It is the name of the new virus.": (1.0, 0.0),
            "The new virus was named SARS-CoV-2.": _at(ANSWER_THRESHOLD + 0.01),
        }
    )
    (group,) = kb.find(vectors)
    assert group.verdict == "same"
    assert group.members[1].answer_similarity == pytest.approx(ANSWER_THRESHOLD + 0.01, abs=1e-4)


def test_questions_are_grouped_from_the_threshold_up_only() -> None:
    kb = Knowledge()
    kb.section("a.html", "Should I wear a mask?")
    kb.section("b.html", "Should I wear a mask to protect myself?")
    kb.section("c.html", "Who is at risk?")
    kb.section("d.html", "Who is at risk of severe disease?")
    vectors = Vectors(
        {
            "Should I wear a mask?": (1.0, 0.0),
            "Should I wear a mask to protect myself?": _at(QUESTION_THRESHOLD),
            "Who is at risk?": (0.0, 0.0, 1.0),
            "Who is at risk of severe disease?": (0.0, 0.0, *_at(QUESTION_THRESHOLD - 0.01)),
        }
    )
    (group,) = kb.find(vectors)
    assert [m.question for m in group.members] == [
        "Should I wear a mask?",
        "Should I wear a mask to protect myself?",
    ]
    assert group.reason == f"questions alike (cosine >= {QUESTION_THRESHOLD:.2f})"
    assert group.members[1].question_similarity == pytest.approx(QUESTION_THRESHOLD, abs=1e-4)


def test_every_pair_of_a_group_is_alike_not_just_a_chain() -> None:
    kb = Knowledge()
    kb.section("a.html", "A?")
    kb.section("b.html", "B?")
    kb.section("c.html", "C?")
    # A-B 0.99 and B-C 0.97, but A-C only about 0.93: A and B form the group, C stays alone.
    b = _at(0.99)
    vectors = Vectors({"A?": (1.0, 0.0), "B?": b, "C?": _at(0.93)})
    assert [g.entry_ids for g in kb.find(vectors)] == [(kb.entries[0].id, kb.entries[1].id)]


def test_a_curated_faq_entry_is_the_canonical_one() -> None:
    kb = Knowledge()
    kb.section("a-guide.md", "How do refunds work?")
    faq = kb.section("z/faq.jsonl", "How do refunds work?", origin="faq")
    (group,) = kb.find()
    assert group.canonical == faq.id


def test_within_one_file_the_earlier_section_is_the_canonical_one() -> None:
    kb = Knowledge()
    later = kb.section("a.html", "How can people stop stigma?", order=5)
    earlier = kb.section("a.html", "How can people stop stigma?", order=2)
    (group,) = kb.find()
    assert group.entry_ids == (earlier.id, later.id)


def test_document_titles_are_grouped_only_when_equal() -> None:
    kb = Knowledge()
    kb.section("a.html", "CDC - Frequently Asked Questions", "Source: a", origin="title")
    kb.section("b.html", "CDC - Healthcare Professionals FAQ", "Source: b", origin="title")
    vectors = Vectors(
        {
            "CDC - Frequently Asked Questions": (1.0, 0.0),
            "CDC - Healthcare Professionals FAQ": _at(0.99),
        }
    )
    assert kb.find(vectors) == []


def test_entries_without_an_answer_are_not_compared() -> None:
    kb = Knowledge()
    kb.section("a.html", "Where is the office?")
    kb.section("b.html", "Where is the office?", status="rejected")
    assert kb.find() == []


def test_group_ids_are_content_hashes_independent_of_order() -> None:
    kb = Knowledge()
    kb.section("a.html", "Q?")
    kb.section("b.html", "Q?", "Another answer.")
    (group,) = kb.find()
    kb.entries.reverse()
    kb.questions.reverse()
    (again,) = kb.find()
    assert again == group
    assert group.id.startswith("dup-")
    assert len(group.id) == len("dup-") + 12


def test_only_questions_and_group_answers_are_embedded() -> None:
    kb = Knowledge()
    kb.section("a.html", "Q?")
    kb.section("b.html", "Q?")
    kb.section("c.html", "Other?", "Unrelated.")
    vectors = Vectors()
    kb.find(vectors)
    assert vectors.calls == [["Q?", "Q?", "Other?"], [ANSWER, ANSWER]]


# --- merge_duplicates -------------------------------------------------------------------------


def _approve(entries: Sequence[Entry], but: dict[str, EntryStatus] | None = None) -> list[Entry]:
    """The entries approved, but those of ``but`` with the status it gives."""
    return [msgspec.structs.replace(e, status=(but or {}).get(e.id, "approved")) for e in entries]


def test_a_merged_member_trains_the_canonical_class_and_is_cited_as_an_alternate() -> None:
    kb = Knowledge()
    kb.section("a.html", "What are the symptoms?", paraphrases=("What about symptoms?",))
    kb.section(
        "b.html", "What are the symptoms?", paraphrases=("What about symptoms?", "Signs of it?")
    )
    groups = kb.find()
    canonical, other = kb.entries

    merged = merge_duplicates(_approve(kb.entries), groups)

    (entry,) = merged.entries
    assert entry.id == canonical.id
    assert entry.paraphrases == ("What about symptoms?", "Signs of it?")
    assert merged.alternates == {canonical.id: other.sources}
    assert merged.groups == tuple(groups)


def test_a_held_conflict_is_neither_served_nor_merged() -> None:
    kb = Knowledge()
    kb.section("a.html", "Close contact?", "Stay home.")
    kb.section("b.html", "Close contact?", "Call a doctor.", paraphrases=("After contact?",))
    groups = kb.find()
    canonical, other = kb.entries
    entries = _approve(kb.entries, {other.id: "pending"})

    merged = merge_duplicates(entries, groups)

    assert [e.id for e in merged.entries] == [canonical.id]
    assert merged.entries[0].paraphrases == ()
    assert merged.alternates == {}
    assert [m.status for m in merged.groups[0].members] == ["canonical", "held"]


def test_a_conflict_approved_in_review_is_merged() -> None:
    kb = Knowledge()
    kb.section("a.html", "Close contact?", "Stay home.")
    kb.section("b.html", "Close contact?", "Call a doctor.")
    groups = kb.find()
    assert groups[0].verdict == "conflict"
    merged = merge_duplicates(_approve(kb.entries), groups)
    assert len(merged.entries) == 1
    assert [m.status for m in merged.groups[0].members] == ["canonical", "merged"]
    assert merged.groups[0].verdict == "conflict"  # what was found, whatever was decided


def test_when_the_canonical_entry_is_not_approved_the_next_one_serves() -> None:
    kb = Knowledge()
    kb.section("a.html", "Q?")
    kb.section("b.html", "Q?")
    kb.section("c.html", "Q?")
    groups = kb.find()
    first, second, third = kb.entries
    entries = _approve(kb.entries, {first.id: "rejected"})

    merged = merge_duplicates(entries, groups)

    assert [e.id for e in merged.entries] == [second.id]
    assert merged.alternates == {second.id: third.sources}
    (group,) = merged.groups
    assert group.canonical == second.id
    assert [m.status for m in group.members] == ["rejected", "canonical", "merged"]


def test_entries_outside_every_group_pass_through_unchanged() -> None:
    kb = Knowledge()
    kb.section("a.html", "Q?")
    kb.section("b.html", "Q?")
    alone = kb.section("c.html", "Else?", "Other.")
    entries = _approve(kb.entries)
    merged = merge_duplicates(entries, kb.find())
    assert merged.entries[-1] == entries[-1]
    assert merged.entries[-1].id == alone.id
    assert merge_duplicates(entries, []).entries == tuple(entries)


# --- compiled as one entry --------------------------------------------------------------------


def test_a_group_compiles_as_one_entry_citing_its_own_section() -> None:
    kb = Knowledge()
    kb.section("a.html", "What are the symptoms?", paraphrases=("Tell me about symptoms",))
    kb.section("b.html", "What are the symptoms?", paraphrases=("Signs of the illness?",))
    kb.section("b.html", "Close contact?", "Stay home.", order=1)
    kb.section("c.html", "Close contact?", "Call a doctor.")
    groups = kb.find()
    symptoms, other, contact, conflicting = kb.entries
    entries = _approve(kb.entries, {conflicting.id: "pending"})
    report = IngestReport(
        sources=tuple(
            SourceDoc(
                doc_id=PurePosixPath(p).stem,
                path=p,
                kind="html",
                sha256="0" * 64,
                bytes=1,
                modified="2026-01-01",
            )
            for p in ("a.html", "b.html", "c.html")
        )
    )

    snapshot = build_snapshot(
        SnapshotInputs(
            version="v1",
            parent=None,
            report=report,
            chunks=kb.chunks,
            topics=[],
            entries=entries,
            duplicates=groups,
        )
    )

    assert sorted(i.intent for i in snapshot.intents) == sorted([symptoms.id, contact.id])
    intent = next(i for i in snapshot.intents if i.intent == symptoms.id)
    assert intent.sources == symptoms.sources
    assert intent.alternates == other.sources
    assert intent.examples == (
        "What are the symptoms?",
        "Tell me about symptoms",
        "Signs of the illness?",
    )
    exact = next(e for e in snapshot.exact if e.id == symptoms.id)
    assert exact.alternates == other.sources
    assert "Signs of the illness?" in exact.aliases
    assert [g.verdict for g in snapshot.manifest.duplicates] == ["same", "conflict"]
    assert [m.status for m in snapshot.manifest.duplicates[1].members] == ["canonical", "held"]
    snapshot.verify()
