"""Auto-FAQ drafts: which logged misses become questions, and that review always holds them."""

from __future__ import annotations

from pathlib import Path

import pytest

from schemas.build import Entry, Question, QuestionOrigin
from schemas.records import Source
from stores.audit import MissSummary
from stores.review import SqliteReviewQueue
from tasks.auto_faq import AutoFaqPolicy, miss_entry_id, miss_questions
from tasks.review import ReviewPolicy, apply_review


def _miss(example: str, count: int) -> MissSummary:
    return MissSummary(
        normalized=example.casefold(),
        example=example,
        count=count,
        last_seen="2026-12-02T10:00:00",
        tenants=("acme",),
        best_guess=None,
        best_score=0.1,
    )


COMPILED = [
    Question(
        entry_id="returns.window",
        text="What is the return window?",
        origin="heading",
        paraphrases=("how long can I return things",),
    )
]


def test_frequent_misses_no_compiled_question_asks_become_drafts() -> None:
    misses = [
        _miss("Do you ship to Canada?", 5),
        _miss("How long can I return things?", 9),  # a compiled phrasing already
        _miss("can i pay with paypal", 2),
        _miss("is the store open on sunday", 1),  # asked once
        _miss("Do you ship to canada", 3),  # the same canonical question again
    ]

    drafts = miss_questions(misses, COMPILED, AutoFaqPolicy(min_asked=2))

    assert [d.text for d in drafts] == ["Do you ship to Canada?", "can i pay with paypal"]
    assert {d.origin for d in drafts} == {"miss"}
    assert drafts[0].entry_id == miss_entry_id("do you ship to CANADA")  # stable id
    assert drafts[0].entry_id.startswith("miss-")


@pytest.mark.parametrize(
    ("policy", "expected"),
    [(AutoFaqPolicy(min_asked=0), 0), (AutoFaqPolicy(limit=1), 1), (AutoFaqPolicy(limit=0), 0)],
)
def test_the_policy_turns_drafts_off_or_caps_them(policy: AutoFaqPolicy, expected: int) -> None:
    misses = [_miss("Do you ship to Canada?", 5), _miss("can i pay with paypal", 4)]
    assert len(miss_questions(misses, COMPILED, policy)) == expected


def _entry(entry_id: str, origin: QuestionOrigin, score: float) -> Entry:
    return Entry(
        id=entry_id,
        question="Do you ship to Canada?",
        answer="We ship to Canada and the US.",
        sources=(Source(doc_id="shipping", path="shipping.md", section="Canada", anchor="canada"),),
        origin=origin,
        score=score,
        status="pending",
        fingerprint=f"fp-{entry_id}",
    )


def test_review_holds_a_draft_however_well_it_verified(tmp_path: Path) -> None:
    queue = SqliteReviewQueue(f"sqlite:///{tmp_path / 'store.db'}")
    draft = _entry(miss_entry_id("Do you ship to Canada?"), "miss", 1.0)
    section = _entry("shipping.canada", "heading", 1.0)
    try:
        reviewed = apply_review([draft, section], ReviewPolicy(mode="auto"), queue)
        held = [item.entry_id for item in queue.items("pending")]
        queue.decide(draft.id, "approved", reviewer="ana")
        again = apply_review([draft], ReviewPolicy(mode="auto"), queue)
    finally:
        queue.close()

    assert [(e.id, e.status) for e in reviewed] == [
        (draft.id, "pending"),
        ("shipping.canada", "approved"),
    ]
    assert "auto-FAQ draft" in reviewed[0].note
    assert held == [draft.id]
    assert (again[0].status, again[0].approved_by) == ("approved", "ana")
