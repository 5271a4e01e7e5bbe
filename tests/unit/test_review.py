"""Stage 8 — review policy and queue decisions; the provider call cache of a compile."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path

import msgspec
import pytest

import stores.review
from providers.base import DraftAnswer, Passage, Provider, Usage, Verdict
from schemas.build import Entry, EntryStatus, QuestionOrigin
from schemas.errors import InvalidInputError
from schemas.manifest import DuplicateGroup, DuplicateMember, DuplicateVerdict
from schemas.records import Source
from stores.cache import BuildCache
from stores.review import ReviewItem, ReviewStatus, SqliteReviewQueue
from tasks._llm_cache import CachedProvider
from tasks.duplicates import conflict_fingerprint
from tasks.review import ReviewPolicy, apply_review

FAQ_SOURCE = Source(doc_id="faq", path="help/faq.jsonl", section="Q?", anchor="faq.one")
DOC_SOURCE = Source(doc_id="refunds", path="refunds.md", section="Returns", anchor="returns")


def _entry(
    ident: str,
    *,
    score: float = 0.9,
    fingerprint: str | None = None,
    origin: QuestionOrigin = "synthesized",
    status: EntryStatus = "pending",
) -> Entry:
    return Entry(
        id=ident,
        question=f"Question {ident}?",
        answer=f"Generated answer {ident}.",
        sources=(FAQ_SOURCE if origin == "faq" else DOC_SOURCE,),
        origin=origin,
        score=score,
        status=status,
        fingerprint=fingerprint if fingerprint is not None else f"fp-{ident}",
    )


@pytest.fixture
def queue(tmp_path: Path) -> Iterator[SqliteReviewQueue]:
    """An empty review queue in a SQLite file."""
    opened = SqliteReviewQueue(f"sqlite:///{tmp_path / 'review.db'}")
    yield opened
    opened.close()


# --- apply_review -----------------------------------------------------------------------------


def test_curated_faq_entries_are_approved_as_curated(queue: SqliteReviewQueue) -> None:
    (entry,) = apply_review(
        [_entry("faq.one", origin="faq", score=0.0)], ReviewPolicy(mode="full"), queue
    )
    assert entry.status == "approved"
    assert (entry.approved_via, entry.approved_by) == ("curated", "help/faq.jsonl")
    assert datetime.fromisoformat(entry.approved_at).tzinfo is not None
    assert queue.items() == []


def test_auto_approves_scores_at_the_threshold_and_holds_lower_ones(
    queue: SqliteReviewQueue,
) -> None:
    entries = [_entry("high", score=0.95), _entry("edge", score=0.8), _entry("low", score=0.79)]
    out = {e.id: e for e in apply_review(entries, ReviewPolicy(mode="auto"), queue)}
    assert out["high"].status == out["edge"].status == "approved"
    assert (out["high"].approved_via, out["high"].approved_by) == ("auto", "score>=0.8")
    assert out["low"].status == "pending"
    assert out["low"].note == "waiting for review"
    assert (out["low"].approved_via, out["low"].approved_by) == ("", "")
    (held,) = queue.items("pending")
    assert (held.entry_id, held.fingerprint, held.score) == ("low", "fp-low", 0.79)
    assert held.answer == "Generated answer low."
    assert held.sources == (DOC_SOURCE.ref,)


def test_entries_keep_their_order(queue: SqliteReviewQueue) -> None:
    entries = [_entry(f"e{i}", score=i / 10) for i in range(10)]
    out = apply_review(entries, ReviewPolicy(), queue)
    assert [e.id for e in out] == [e.id for e in entries]


def test_full_mode_holds_every_generated_answer(queue: SqliteReviewQueue) -> None:
    entries = [_entry(f"e{i}", score=1.0) for i in range(5)] + [_entry("faq.one", origin="faq")]
    out = apply_review(entries, ReviewPolicy(mode="full"), queue)
    assert [e.status for e in out] == ["pending"] * 5 + ["approved"]
    assert sorted(i.entry_id for i in queue.items("pending")) == [f"e{i}" for i in range(5)]


def test_rejected_entries_pass_through(queue: SqliteReviewQueue) -> None:
    rejected = _entry("bad", score=1.0, status="rejected")
    assert apply_review([rejected], ReviewPolicy(mode="full"), queue) == [rejected]
    assert queue.items() == []


def test_no_queue_still_applies_the_policy() -> None:
    out = apply_review([_entry("a", score=0.1), _entry("b", score=0.9)], ReviewPolicy(), None)
    assert [e.status for e in out] == ["pending", "approved"]


def _held(entries: Sequence[Entry], policy: ReviewPolicy) -> set[str]:
    return {e.id for e in apply_review(entries, policy, None) if e.status == "pending"}


def test_sample_mode_holds_about_the_sample_rate_deterministically() -> None:
    entries = [_entry(f"entry.{i}", score=1.0) for i in range(400)]
    policy = ReviewPolicy(mode="sample", sample_rate=0.25)
    held = _held(entries, policy)
    assert 0.15 * 400 < len(held) < 0.35 * 400
    assert _held(entries, policy) == held
    assert _held(entries[::-1], policy) == held


def test_sample_mode_still_holds_low_scores() -> None:
    entries = [_entry(f"entry.{i}", score=0.1) for i in range(20)]
    assert len(_held(entries, ReviewPolicy(mode="sample", sample_rate=0.0))) == 20


@pytest.mark.parametrize(("rate", "share"), [(0.0, 0.0), (1.0, 1.0)])
def test_sample_rate_bounds(rate: float, share: float) -> None:
    entries = [_entry(f"entry.{i}", score=1.0) for i in range(50)]
    assert len(_held(entries, ReviewPolicy(mode="sample", sample_rate=rate))) == 50 * share


def test_an_edited_approval_is_applied_on_the_next_review(queue: SqliteReviewQueue) -> None:
    entry = _entry("e1", score=0.5)
    policy = ReviewPolicy()
    assert apply_review([entry], policy, queue)[0].status == "pending"
    decided = queue.decide("e1", "approved", reviewer="ana", answer="A person's better answer.")
    assert (decided.status, decided.reviewer) == ("approved", "ana")

    (again,) = apply_review([entry], policy, queue)
    assert again.status == "approved"
    assert again.answer == "A person's better answer."
    assert (again.approved_via, again.approved_by) == ("review", "ana")
    assert again.approved_at == decided.decided_at
    assert again.note == ""
    assert queue.items("pending") == []


def test_an_approval_without_edit_keeps_the_answer(queue: SqliteReviewQueue) -> None:
    entry = _entry("e1", score=0.5)
    apply_review([entry], ReviewPolicy(mode="full"), queue)
    queue.decide("e1", "approved", reviewer="ana")
    (again,) = apply_review([entry], ReviewPolicy(mode="full"), queue)
    assert (again.status, again.answer) == ("approved", entry.answer)


def test_a_rejection_is_applied_on_the_next_review(queue: SqliteReviewQueue) -> None:
    entry = _entry("e1", score=1.0)
    apply_review([entry], ReviewPolicy(mode="full"), queue)
    queue.decide("e1", "rejected", reviewer="bo")
    (again,) = apply_review([entry], ReviewPolicy(mode="auto"), queue)
    assert again.status == "rejected"
    assert again.note == "rejected in review"
    assert again.approved_by == "bo"


def test_a_decision_does_not_hold_for_a_changed_fingerprint(queue: SqliteReviewQueue) -> None:
    apply_review([_entry("e1", score=0.5, fingerprint="old")], ReviewPolicy(), queue)
    queue.decide("e1", "approved", reviewer="ana", answer="Edited.")
    changed = _entry("e1", score=0.5, fingerprint="new")
    (again,) = apply_review([changed], ReviewPolicy(), queue)
    assert again.status == "pending"
    assert again.answer == changed.answer
    assert {(i.fingerprint, i.status) for i in queue.items()} == {
        ("old", "approved"),
        ("new", "pending"),
    }
    (auto,) = apply_review([_entry("e1", score=0.9, fingerprint="new")], ReviewPolicy(), queue)
    assert (auto.status, auto.answer) == ("approved", "Generated answer e1.")


def test_a_curated_faq_ignores_queue_decisions(queue: SqliteReviewQueue) -> None:
    queue.submit(
        [
            ReviewItem(
                entry_id="faq.one", fingerprint="fp-faq.one", question="q", answer="a", score=1
            )
        ]
    )
    queue.decide("faq.one", "rejected", reviewer="ana")
    (entry,) = apply_review([_entry("faq.one", origin="faq")], ReviewPolicy(), queue)
    assert entry.status == "approved"


# --- SqliteReviewQueue ----------------------------------------------------------------------------


def _item(entry_id: str, fingerprint: str, answer: str = "a") -> ReviewItem:
    return ReviewItem(
        entry_id=entry_id, fingerprint=fingerprint, question="q", answer=answer, score=0.5
    )


def test_deciding_an_unknown_id_is_invalid_input(queue: SqliteReviewQueue) -> None:
    with pytest.raises(InvalidInputError, match="'nope'"):
        queue.decide("nope", "approved", reviewer="ana")


def test_resubmitting_keeps_a_decision(queue: SqliteReviewQueue) -> None:
    queue.submit([_item("e1", "fp")])
    queue.decide("e1", "approved", reviewer="ana")
    queue.submit([_item("e1", "fp", answer="changed")])
    (item,) = queue.items()
    assert (item.status, item.answer) == ("approved", "a")
    assert set(queue.decisions()) == {("e1", "fp")}


def test_items_filter_by_status(queue: SqliteReviewQueue) -> None:
    queue.submit([_item("a", "1"), _item("b", "2"), _item("c", "3")])
    queue.decide("b", "rejected", reviewer="ana")
    assert sorted(i.entry_id for i in queue.items("pending")) == ["a", "c"]
    assert [i.entry_id for i in queue.items("rejected")] == ["b"]
    assert [i.entry_id for i in queue.items("approved")] == []
    assert len(queue.items()) == 3


def test_decisions_persist_across_connections(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'nested' / 'review.db'}"
    first = SqliteReviewQueue(url)
    first.submit([_item("e1", "fp")])
    first.decide("e1", "approved", reviewer="ana")
    first.close()
    second = SqliteReviewQueue(url)
    try:
        assert second.decisions()[("e1", "fp")].reviewer == "ana"
    finally:
        second.close()


class _FrozenClock(datetime):
    @classmethod
    def now(cls, tz: object = None) -> _FrozenClock:
        return cls(2026, 1, 1, tzinfo=UTC)


def test_a_decision_goes_to_the_newest_fingerprint_within_one_second(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(stores.review, "datetime", _FrozenClock)
    for old, new in (("a", "b"), ("b", "a")):
        queue = SqliteReviewQueue(f"sqlite:///{tmp_path / f'{old}{new}.db'}")
        try:
            queue.submit([_item("e1", old)])
            queue.decide("e1", "approved", reviewer="ana")
            queue.submit([_item("e1", new)])
            assert queue.decide("e1", "rejected", reviewer="ana").fingerprint == new
        finally:
            queue.close()


# --- conflicting duplicates -------------------------------------------------------------------

WHO = Source(doc_id="who", path="who.html", section="Close contact?", anchor="close-contact")
CDC = Source(doc_id="cdc", path="cdc.html", section="Close contact?", anchor="close-contact")


def _conflict(verdict: DuplicateVerdict = "conflict") -> DuplicateGroup:
    """cdc.close-contact serves the group; who.close-contact answers otherwise (or alike)."""
    return DuplicateGroup(
        id="dup-000000000001",
        verdict=verdict,
        canonical="cdc.close-contact",
        members=(
            DuplicateMember(
                entry_id="cdc.close-contact",
                question="Close contact?",
                section=CDC,
                status="canonical",
            ),
            DuplicateMember(
                entry_id="who.close-contact",
                question="Close contact?",
                section=WHO,
                answer_similarity=0.68,
                status="held" if verdict == "conflict" else "merged",
            ),
        ),
    )


def _pair(**canonical: str) -> list[Entry]:
    cdc = msgspec.structs.replace(_entry("cdc.close-contact", score=0.95), sources=(CDC,))
    who = msgspec.structs.replace(_entry("who.close-contact", score=0.95), sources=(WHO,))
    return [msgspec.structs.replace(cdc, **canonical), who]


def test_a_conflicting_duplicate_is_held_with_a_reason_naming_both_sections(
    queue: SqliteReviewQueue,
) -> None:
    entries = _pair()
    cdc, who = apply_review(entries, ReviewPolicy(mode="auto"), queue, [_conflict()])

    assert cdc.status == "approved"
    assert who.status == "pending"
    (held,) = queue.items("pending")
    assert held.entry_id == "who.close-contact"
    assert held.fingerprint == conflict_fingerprint(entries[1], entries[0])
    assert "who.html#close-contact" in held.reason
    assert "cdc.html#close-contact" in held.reason
    assert "0.68" in held.reason
    assert who.note == held.reason


def test_a_duplicate_with_the_same_answer_is_reviewed_as_usual(queue: SqliteReviewQueue) -> None:
    out = apply_review(_pair(), ReviewPolicy(mode="auto"), queue, [_conflict("same")])
    assert [e.status for e in out] == ["approved", "approved"]
    assert queue.items() == []


def test_a_conflict_is_held_even_for_a_curated_entry(queue: SqliteReviewQueue) -> None:
    cdc, who = _pair()
    who = msgspec.structs.replace(who, origin="faq")
    out = apply_review([cdc, who], ReviewPolicy(mode="auto"), queue, [_conflict()])
    assert out[1].status == "pending"


@pytest.mark.parametrize(
    ("decision", "status", "note"),
    [
        ("approved", "approved", "merged into cdc.close-contact in review"),
        ("rejected", "rejected", "rejected in review (duplicate)"),
    ],
)
def test_a_decision_on_a_conflict_is_applied_on_the_next_review(
    queue: SqliteReviewQueue, decision: ReviewStatus, status: str, note: str
) -> None:
    apply_review(_pair(), ReviewPolicy(), queue, [_conflict()])
    queue.decide("who.close-contact", decision, reviewer="ana")

    _, who = apply_review(_pair(), ReviewPolicy(), queue, [_conflict()])

    assert (who.status, who.note) == (status, note)
    assert who.approved_by == ("ana" if decision == "approved" else "")


def test_a_conflict_decision_does_not_hold_once_the_canonical_answer_changes(
    queue: SqliteReviewQueue,
) -> None:
    apply_review(_pair(), ReviewPolicy(), queue, [_conflict()])
    queue.decide("who.close-contact", "approved", reviewer="ana")

    _, who = apply_review(_pair(fingerprint="fp-changed"), ReviewPolicy(), queue, [_conflict()])

    assert who.status == "pending"
    assert len(queue.items("pending")) == 1


def test_an_approval_of_the_answer_alone_does_not_clear_a_conflict(
    queue: SqliteReviewQueue,
) -> None:
    queue.submit([_item("who.close-contact", "fp-who.close-contact")])
    queue.decide("who.close-contact", "approved", reviewer="ana")
    _, who = apply_review(_pair(), ReviewPolicy(), queue, [_conflict()])
    assert who.status == "pending"


# --- CachedProvider ---------------------------------------------------------------------------


class CountingProvider:
    """A provider that answers trivially and counts the calls that reach it."""

    name = "counting"

    def __init__(self, model: str = "m1") -> None:
        self.model = model
        self.calls: Counter[str] = Counter()

    def synthesize_questions(
        self, title: str, passages: Sequence[Passage], n: int
    ) -> tuple[str, ...]:
        self.calls["synthesize"] += 1
        return tuple(f"{title} {i}?" for i in range(n))

    def answer(self, question: str, passages: Sequence[Passage]) -> DraftAnswer:
        self.calls["answer"] += 1
        return DraftAnswer(text=passages[0].text, citations=(passages[0].id,))

    def verify(self, question: str, answer: str, passages: Sequence[Passage]) -> Verdict:
        self.calls["verify"] += 1
        return Verdict(supported=True, score=0.9, reason="ok")

    def compose(self, question: str, context: str, *, max_tokens: int) -> str:
        self.calls["compose"] += 1
        return context[:max_tokens]

    def usage(self) -> list[Usage]:
        return [Usage(stage=s, calls=c) for s, c in sorted(self.calls.items())]


def _passages(*texts: str) -> list[Passage]:
    return [Passage(id=f"p{i}", text=t, source=DOC_SOURCE) for i, t in enumerate(texts)]


@pytest.fixture
def cache(tmp_path: Path) -> Iterator[BuildCache]:
    """An empty build cache."""
    opened = BuildCache(tmp_path / "cache.db")
    yield opened
    opened.close()


@pytest.fixture
def inner() -> CountingProvider:
    """The provider behind the cache."""
    return CountingProvider()


@pytest.fixture
def cached(inner: CountingProvider, cache: BuildCache) -> CachedProvider:
    """``inner`` behind ``cache``."""
    return CachedProvider(inner, cache)


def test_the_counting_provider_is_a_provider(inner: CountingProvider) -> None:
    assert isinstance(inner, Provider)


def test_a_repeated_answer_does_not_reach_the_provider(
    cached: CachedProvider, inner: CountingProvider
) -> None:
    passages = _passages("Returns take 30 days.")
    first = cached.answer("How long?", passages)
    second = cached.answer("How long?", passages)
    assert first == second == DraftAnswer(text="Returns take 30 days.", citations=("p0",))
    assert inner.calls["answer"] == 1
    assert (cached.generated["answer"], cached.reused["answer"]) == (1, 1)


def test_different_passages_reach_the_provider(
    cached: CachedProvider, inner: CountingProvider
) -> None:
    cached.answer("How long?", _passages("Returns take 30 days."))
    changed = cached.answer("How long?", _passages("Returns take 14 days."))
    assert changed.text == "Returns take 14 days."
    cached.answer("How long exactly?", _passages("Returns take 14 days."))
    assert inner.calls["answer"] == 3
    assert cached.reused["answer"] == 0


def test_every_stage_is_cached(cached: CachedProvider, inner: CountingProvider) -> None:
    passages = _passages("Text one.", "Text two.")
    for _ in range(3):
        assert cached.synthesize_questions("Returns", passages, 2) == ("Returns 0?", "Returns 1?")
        assert cached.verify("q", "a", passages) == Verdict(supported=True, score=0.9, reason="ok")
        assert cached.compose("q", "some context", max_tokens=4) == "some"
    cached.compose("q", "other context", max_tokens=4)
    cached.compose("q", "some context", max_tokens=5)
    cached.synthesize_questions("Returns", passages, 3)
    assert inner.calls == Counter({"synthesize": 2, "verify": 1, "compose": 3})
    assert cached.reused == Counter({"synthesize": 2, "verify": 2, "compose": 2})


def test_generated_and_reused_add_up_to_the_calls(
    cached: CachedProvider, inner: CountingProvider
) -> None:
    questions = ["a?", "b?", "a?", "c?", "b?", "a?"]
    for question in questions:
        cached.answer(question, _passages("Text."))
    assert cached.generated["answer"] + cached.reused["answer"] == len(questions)
    assert cached.generated["answer"] == inner.calls["answer"] == 3


def test_the_cache_outlives_the_provider(inner: CountingProvider, cache: BuildCache) -> None:
    CachedProvider(inner, cache).answer("q?", _passages("Text."))
    again = CachedProvider(CountingProvider(), cache)
    again.answer("q?", _passages("Text."))
    assert again.generated == Counter()
    assert again.reused == Counter({"answer": 1})


def test_another_model_does_not_reuse_answers(inner: CountingProvider, cache: BuildCache) -> None:
    CachedProvider(inner, cache).answer("q?", _passages("Text."))
    other = CountingProvider(model="m2")
    CachedProvider(other, cache).answer("q?", _passages("Text."))
    assert other.calls["answer"] == 1


def test_usage_and_identity_come_from_the_inner_provider(
    cached: CachedProvider, inner: CountingProvider
) -> None:
    cached.answer("q?", _passages("Text."))
    cached.answer("q?", _passages("Text."))
    assert (cached.name, cached.model) == ("counting", "m1")
    assert cached.usage() == [Usage(stage="answer", calls=1)]
    assert isinstance(cached, Provider)
