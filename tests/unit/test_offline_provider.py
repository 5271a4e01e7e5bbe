"""The offline provider: extractive questions, answers, verification and composition."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from providers._text import STOPWORDS, containment, content_words, sentences
from providers.base import Passage, Provider
from providers.offline import OfflineProvider
from schemas.records import Source

RETURNS = (
    "You can return a bike within 30 days of delivery. "
    "Returned bikes must be unused and in their original box. "
    "Refunds are paid to the original card within five working days."
)
SHIPPING = (
    "Shipping is free for orders over 100 euros. "
    "Smaller orders pay a flat shipping fee of 5 euros. "
    "Parcels leave the warehouse every weekday."
)


def _passage(ident: str, text: str, title: str = "") -> Passage:
    return Passage(
        id=ident,
        text=text,
        title=title,
        source=Source(doc_id=ident, path=f"{ident}.md", section=title or ident, anchor=ident),
    )


@pytest.fixture
def provider() -> OfflineProvider:
    """A fresh offline provider (its usage counters start at zero)."""
    return OfflineProvider()


@pytest.fixture
def passages() -> list[Passage]:
    """Two passages on different subjects."""
    return [
        _passage("shipping", SHIPPING, "Shipping costs"),
        _passage("returns", RETURNS, "Return window"),
    ]


def test_the_offline_provider_is_a_provider(provider: OfflineProvider) -> None:
    assert isinstance(provider, Provider)
    assert (provider.name, provider.model) == ("offline", "extractive-v1")


# --- synthesize_questions ---------------------------------------------------------------------


def test_a_question_heading_is_kept_first(provider: OfflineProvider) -> None:
    questions = provider.synthesize_questions("Can I return a bike?", [], 5)
    assert questions[0] == "Can I return a bike?"
    assert len(questions) == 5


def test_a_statement_heading_gives_questions_about_its_subject(provider: OfflineProvider) -> None:
    questions = provider.synthesize_questions("Return window:", [], 8)
    assert questions[0] == "Return window"
    assert "What about return window?" in questions
    assert all("return window" in q.lower() for q in questions)
    assert len(set(questions)) == len(questions)


def test_an_acronym_keeps_its_case(provider: OfflineProvider) -> None:
    assert "Tell me about FAQ" in provider.synthesize_questions("FAQ", [], 8)


@pytest.mark.parametrize("n", [0, 1, 3, 8])
def test_n_caps_the_number_of_questions(provider: OfflineProvider, n: int) -> None:
    assert len(provider.synthesize_questions("Shipping costs", [], n)) == n


def test_there_are_only_so_many_distinct_questions(provider: OfflineProvider) -> None:
    questions = provider.synthesize_questions("Shipping costs", [], 100)
    assert 1 < len(questions) < 100
    assert len(set(questions)) == len(questions)


def test_questions_are_deterministic(passages: list[Passage]) -> None:
    first = OfflineProvider().synthesize_questions("Shipping costs", passages, 6)
    second = OfflineProvider().synthesize_questions("Shipping costs", passages[::-1], 6)
    assert first == second


# --- answer -----------------------------------------------------------------------------------


def test_answer_picks_the_passage_with_the_most_overlap(
    provider: OfflineProvider, passages: list[Passage]
) -> None:
    draft = provider.answer("How many days do I have to return a bike?", passages)
    assert not draft.abstained
    assert draft.citations == ("returns",)
    assert draft.text == RETURNS


def test_answer_text_is_made_of_the_cited_passage_sentences(
    provider: OfflineProvider, passages: list[Passage]
) -> None:
    draft = provider.answer("What does shipping cost for small orders?", passages)
    assert draft.citations == ("shipping",)
    assert all(s in sentences(SHIPPING) for s in sentences(draft.text))


def test_the_title_counts_towards_overlap(provider: OfflineProvider) -> None:
    passages = [
        _passage("plain", "Nothing relevant here at all.", "General"),
        _passage("titled", "Ask at the counter.", "Gift wrapping"),
    ]
    assert provider.answer("Do you offer gift wrapping?", passages).citations == ("titled",)


def test_answer_abstains_without_any_overlap(
    provider: OfflineProvider, passages: list[Passage]
) -> None:
    draft = provider.answer("Which planets have rings?", passages)
    assert draft.abstained
    assert (draft.text, draft.citations) == ("", ())


def test_answer_abstains_without_passages(provider: OfflineProvider) -> None:
    assert provider.answer("How do returns work?", []).abstained


def test_answer_length_is_capped_at_whole_sentences(provider: OfflineProvider) -> None:
    text = " ".join(f"Rule {i} says bikes need care and a regular check." for i in range(30))
    draft = provider.answer("What do bikes need?", [_passage("care", text)])
    assert 0 < len(draft.text.split()) <= 90
    assert draft.text.endswith(".")
    assert text.startswith(draft.text)
    assert len(draft.text) < len(text)


def test_one_long_first_sentence_is_still_answered(provider: OfflineProvider) -> None:
    text = "Bikes " + "really " * 120 + "need care."
    draft = provider.answer("Do bikes need care?", [_passage("care", text)])
    assert draft.text == text


# --- verify -----------------------------------------------------------------------------------


def test_an_answer_quoted_from_the_passages_is_supported(
    provider: OfflineProvider, passages: list[Passage]
) -> None:
    answer = "Refunds are paid to the original card within five working days."
    verdict = provider.verify("When do I get my money?", answer, passages)
    assert verdict.supported
    assert verdict.score == 1.0


def test_one_foreign_sentence_makes_the_answer_unsupported(
    provider: OfflineProvider, passages: list[Passage]
) -> None:
    answer = (
        "You can return a bike within 30 days of delivery. "
        "Helicopters deliver pizzas across Mars tonight."
    )
    verdict = provider.verify("How long can I return?", answer, passages)
    assert not verdict.supported
    assert verdict.score < 0.8
    assert "Helicopters deliver pizzas" in verdict.reason
    assert "return a bike" not in verdict.reason


def test_verify_scores_the_weakest_sentence(provider: OfflineProvider) -> None:
    evidence = [_passage("p", "Bikes are blue and red.")]
    verdict = provider.verify("q", "Bikes are blue. Bikes are green.", evidence)
    assert verdict.score == 0.5


@pytest.mark.parametrize(("answer", "texts"), [("", [RETURNS]), ("Some claim.", [])])
def test_nothing_to_verify_is_not_supported(
    provider: OfflineProvider, answer: str, texts: list[str]
) -> None:
    verdict = provider.verify("q", answer, [_passage(f"p{i}", t) for i, t in enumerate(texts)])
    assert (verdict.supported, verdict.score) == (False, 0.0)


# --- compose ----------------------------------------------------------------------------------

CONTEXT = (
    "## Returns [returns.md#returns]\n"
    "Bikes can be returned within 30 days. "
    "Opening hours are nine to five. "
    "Returned bikes need their original box.\n"
    "## Shipping [shipping.md#shipping]\n"
    "Shipping is free for orders over 100 euros. "
    "Returned bikes are collected by courier."
)


def test_compose_keeps_relevant_sentences_in_their_original_order(
    provider: OfflineProvider,
) -> None:
    composed = provider.compose("Can returned bikes be collected?", CONTEXT, max_tokens=120)
    assert composed == (
        "Bikes can be returned within 30 days. "
        "Returned bikes need their original box. "
        "Returned bikes are collected by courier."
    )


def test_compose_returns_nothing_for_an_unrelated_question(provider: OfflineProvider) -> None:
    assert provider.compose("Which planets have rings?", CONTEXT, max_tokens=120) == ""


def test_compose_needs_more_than_one_shared_word(provider: OfflineProvider) -> None:
    # "orders" alone matches the shipping sentence, but the question asks about more.
    assert provider.compose("Do gift orders arrive wrapped?", CONTEXT, max_tokens=120) == ""


def test_compose_never_quotes_section_headers(provider: OfflineProvider) -> None:
    composed = provider.compose("Returns shipping returns.md shipping.md", CONTEXT, max_tokens=120)
    assert "##" not in composed


def test_compose_respects_max_tokens(provider: OfflineProvider) -> None:
    composed = provider.compose("Can returned bikes be collected?", CONTEXT, max_tokens=14)
    assert 0 < len(composed.split()) <= 14
    assert composed in CONTEXT or all(s in CONTEXT for s in sentences(composed))
    assert "collected by courier" in composed  # the best match comes first


def test_compose_is_deterministic(provider: OfflineProvider) -> None:
    question = "Can returned bikes be collected?"
    assert provider.compose(question, CONTEXT, max_tokens=120) == OfflineProvider().compose(
        question, CONTEXT, max_tokens=120
    )


# --- usage ------------------------------------------------------------------------------------


def test_usage_counts_calls_per_stage(provider: OfflineProvider, passages: list[Passage]) -> None:
    assert provider.usage() == []
    provider.synthesize_questions("Returns", passages, 2)
    provider.answer("returns", passages)
    provider.answer("shipping", passages)
    provider.verify("q", "a.", passages)
    provider.compose("q", CONTEXT, max_tokens=10)
    provider.compose("q", CONTEXT, max_tokens=10)
    provider.compose("q", CONTEXT, max_tokens=10)
    assert {u.stage: u.calls for u in provider.usage()} == {
        "answer": 2,
        "compose": 3,
        "synthesize": 1,
        "verify": 1,
    }
    assert [u.stage for u in provider.usage()] == ["answer", "compose", "synthesize", "verify"]
    assert all(u.input_tokens == u.output_tokens == 0 for u in provider.usage())


# --- providers._text --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("One. Two! Three? Four", ["One.", "Two!", "Three?", "Four"]),
        ('He said. "Quoted" next.', ["He said.", '"Quoted" next.']),
        ("Pay 5.50 euros. 3 bikes left.", ["Pay 5.50 euros.", "3 bikes left."]),
        ("e.g. lower case stays. Next one.", ["e.g. lower case stays.", "Next one."]),
        ("- first item\n- second item\n\nBody", ["- first item", "- second item", "Body"]),
        ("  \n\n ", []),
    ],
)
def test_sentences_split_at_sentence_ends_and_lines(text: str, expected: list[str]) -> None:
    assert sentences(text) == expected


def test_content_words_are_canonical_and_skip_stopwords() -> None:
    assert content_words("What's the RETURN window for my bike?") == ["return", "window", "bike"]
    assert content_words("is it the one") == ["one"]
    assert content_words("") == []


@pytest.mark.parametrize(
    ("claim", "evidence", "share"),
    [
        ("Bikes are blue.", "All bikes are blue here.", 1.0),
        ("Bikes are blue.", "Bikes are red.", 0.5),
        ("Helicopters fly.", "Bikes are red.", 0.0),
        ("the and of", "anything", 1.0),
    ],
)
def test_containment_is_the_share_of_claim_words_in_evidence(
    claim: str, evidence: str, share: float
) -> None:
    assert containment(claim, evidence) == share


@given(st.text(), st.text())
def test_containment_is_a_share(claim: str, evidence: str) -> None:
    assert 0.0 <= containment(claim, evidence) <= 1.0
    assert containment(claim, f"{claim} {evidence}") == 1.0


@given(st.text())
def test_content_words_are_never_stopwords(text: str) -> None:
    assert not STOPWORDS & set(content_words(text))
