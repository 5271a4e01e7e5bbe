"""Stage-boundary frame checks, and the answer ladder L1 -> L2 -> L3 -> SAFE over a snapshot."""

from __future__ import annotations

import msgspec
import pandera.pandas as pa
import pytest

from providers.embedders import HashingEmbedder
from providers.offline import OfflineProvider
from schemas.build import Chunk, Entry, Question
from schemas.errors import GateFailedError, PermanentError
from schemas.frames import ChunkFrame, EntryFrame, QuestionFrame, validate_records
from schemas.keys import exact_key, intent_key, topic_key
from schemas.ladder import (
    DEFAULT_FALLBACK,
    LoadedSnapshot,
    answer_question,
    render_template,
    route_of,
)
from schemas.manifest import Manifest, Snapshot
from schemas.records import (
    FallbackAnswer,
    IntentTemplate,
    SlotSpec,
    Source,
    TopicBlock,
    TopicPassage,
    render_passages,
)
from schemas.router import OUT_OF_SCOPE, ROUTER_BLOB, RouterModel
from tasks.gates import miss_coverage
from tasks.router import fit_router, train_router
from tests.factories import REFUNDS, make_snapshot

SOURCE = Source(doc_id="refunds", path="refunds.md", section="Returns", anchor="returns")


# --- validate_records -------------------------------------------------------------------------


def _entry(ident: str = "a", **changes: object) -> Entry:
    entry = Entry(
        id=ident,
        question="How long can I return?",
        answer="30 days.",
        sources=(SOURCE,),
        score=0.9,
        status="approved",
    )
    return msgspec.structs.replace(entry, **changes)


def _chunk(ident: str = "chunk-0001", **changes: object) -> Chunk:
    chunk = Chunk(
        id=ident,
        doc_id="refunds",
        path="refunds.md",
        section="Returns",
        anchor="returns",
        heading_path=("Returns",),
        text="Bikes can be returned within 30 days.",
        order=0,
    )
    return msgspec.structs.replace(chunk, **changes)


@pytest.mark.parametrize(
    ("records", "model"),
    [
        ([_entry("a"), _entry("b", status="pending", sources=(), score=0.0)], EntryFrame),
        ([_entry("a", status="rejected", answer="")], EntryFrame),
        ([_chunk("chunk-0001"), _chunk("chunk-0002", anchor="returns-1", order=1)], ChunkFrame),
        ([Question(entry_id="q1", text="Q?", origin="heading")], QuestionFrame),
        ([], EntryFrame),
    ],
)
def test_valid_records_pass(records: list[msgspec.Struct], model: type[pa.DataFrameModel]) -> None:
    validate_records("stage", records, model)


@pytest.mark.parametrize(
    ("stage", "records", "model", "check"),
    [
        ("answers", [_entry("a"), _entry("a")], EntryFrame, "id: field_uniqueness"),
        ("answers", [_entry(score=1.5)], EntryFrame, "score: less_than_or_equal_to(1.0)"),
        ("answers", [_entry(score=-0.1)], EntryFrame, "score: greater_than_or_equal_to(0.0)"),
        ("review", [_entry(sources=())], EntryFrame, "row: served_answers_are_sourced"),
        ("review", [_entry(answer="")], EntryFrame, "row: served_answers_are_sourced"),
        ("review", [_entry(status="maybe")], EntryFrame, "status: isin"),
        ("chunks", [_chunk(), _chunk()], ChunkFrame, "id: field_uniqueness"),
        ("chunks", [_chunk(anchor="has space")], ChunkFrame, "anchor: str_matches"),
        ("chunks", [_chunk("short")], ChunkFrame, "id: str_length"),
        ("chunks", [_chunk(order=-1)], ChunkFrame, "order: greater_than_or_equal_to(0)"),
        (
            "questions",
            [Question(entry_id="q", text="", origin="faq")],
            QuestionFrame,
            "text: str_length",
        ),
    ],
)
def test_invalid_records_fail_the_gate_naming_stage_and_check(
    stage: str,
    records: list[msgspec.Struct],
    model: type[pa.DataFrameModel],
    check: str,
) -> None:
    with pytest.raises(GateFailedError) as raised:
        validate_records(stage, records, model)
    assert raised.value.gate == f"schema:{stage}"
    assert check in raised.value.reason
    assert "(row " in raised.value.reason


def test_the_failing_row_is_named() -> None:
    records = [_entry("a"), _entry("b"), _entry("c", score=2.0)]
    with pytest.raises(GateFailedError, match=r"score: less_than_or_equal_to\(1\.0\) \(row 2\)"):
        validate_records("answers", records, EntryFrame)


# --- the ladder on make_snapshot --------------------------------------------------------------

QUESTION = "How long do I have to return a bike?"
ANSWER = "You can return a bike within 30 days."


@pytest.fixture
def loaded() -> LoadedSnapshot:
    """The factory snapshot with an answer for tenant ``acme``."""
    return LoadedSnapshot(make_snapshot("v1", tenant_answers={"acme": "Acme has 60 days."}))


def test_the_factory_router_blob_is_not_loaded(loaded: LoadedSnapshot) -> None:
    # make_snapshot stores its placeholder as "router.json"; the ladder reads ROUTER_BLOB only.
    assert ROUTER_BLOB not in make_snapshot("v1").blobs
    assert loaded.router is None


@pytest.mark.parametrize(
    ("question", "normalized"),
    [
        (QUESTION, "how long do i have to return a bike"),
        ("  how LONG do i have to return a bike ", "how long do i have to return a bike"),
        ("What is the return window?", "what is the return window"),
        ("what is the return window", "what is the return window"),
    ],
)
def test_l1_answers_the_question_and_its_alias(
    loaded: LoadedSnapshot, question: str, normalized: str
) -> None:
    answer = answer_question(loaded, question)
    assert answer.layer == "L1"
    assert answer.answer == ANSWER
    assert answer.entry_id == "refund.window"
    assert answer.sources == (REFUNDS,)
    assert answer.confidence == 1.0
    assert answer.version == "v1"
    assert answer.cache_key == exact_key("v1", question)
    assert answer.normalized == normalized


def test_a_tenant_gets_its_own_exact_answer(loaded: LoadedSnapshot) -> None:
    answer = answer_question(loaded, QUESTION, tenant="acme")
    assert (answer.layer, answer.answer) == ("L1", "Acme has 60 days.")
    assert answer.cache_key == exact_key("v1", QUESTION, tenant="acme")


@pytest.mark.parametrize("tenant", [None, "globex"])
def test_other_tenants_get_the_shared_answer(loaded: LoadedSnapshot, tenant: str | None) -> None:
    answer = answer_question(loaded, QUESTION, tenant=tenant)
    assert (answer.layer, answer.answer) == ("L1", ANSWER)
    assert answer.cache_key == exact_key("v1", QUESTION)


def test_unrelated_text_without_a_router_gets_the_fallback(loaded: LoadedSnapshot) -> None:
    answer = answer_question(loaded, "What is the weather on Mars?", composer=OfflineProvider())
    assert answer.layer == "SAFE"
    assert answer.answer == "I'm not sure; contact support."
    assert (answer.entry_id, answer.sources, answer.cache_key) == (None, (), None)
    assert answer.confidence == 0.0
    assert answer.explanation == "no router in this snapshot"


def test_the_fallback_falls_back_to_english_and_then_the_default() -> None:
    snapshot = Snapshot(
        manifest=Manifest(version="v2", created_at="2026-01-01T00:00:00Z"),
        fallbacks=(FallbackAnswer(domain="general", text="Ask us."),),
    ).sealed()
    loaded = LoadedSnapshot(snapshot)
    assert answer_question(loaded, "Wie spät ist es?", language="de").answer == "Ask us."
    empty = LoadedSnapshot(
        Snapshot(manifest=Manifest(version="v3", created_at="2026-01-01T00:00:00Z")).sealed()
    )
    assert answer_question(empty, "anything").answer == DEFAULT_FALLBACK


# --- render_template --------------------------------------------------------------------------

TEMPLATE = IntentTemplate(
    intent="refund.window",
    template="You can return a {product} within {days} days{{ever}}.",
    slots=(
        SlotSpec(name="product", kind="enum", values=("bike", "helmet"), default="bike"),
        SlotSpec(name="days", kind="number"),
    ),
)


@pytest.mark.parametrize(
    ("slots", "text"),
    [
        ({}, "You can return a bike within {days} days{ever}."),
        ({"days": 30}, "You can return a bike within 30 days{ever}."),
        ({"product": "helmet", "days": "14"}, "You can return a helmet within 14 days{ever}."),
        ({"colour": "red", "days": 7}, "You can return a bike within 7 days{ever}."),
    ],
)
def test_render_template_fills_slots_and_keeps_unknown_placeholders(
    slots: dict[str, object], text: str
) -> None:
    assert render_template(TEMPLATE, slots) == text


def test_a_template_without_slots_is_its_text() -> None:
    plain = IntentTemplate(intent="x", template="Call {support} today.")
    assert render_template(plain, {}) == "Call {support} today."


# --- L2 and L3 with a real router -------------------------------------------------------------

ROUTER_EXAMPLES = [
    *[
        (q, "refund.window")
        for q in (
            "How long do I have to return a bike?",
            "What is the return window?",
            "How many days can I send my bike back?",
            "Can I still return my bike after two weeks?",
            "Is there a deadline to return my order?",
            "Return period for bikes",
        )
    ],
    *[
        (q, "shipping.cost")
        for q in (
            "How much does shipping cost?",
            "What are the delivery fees?",
            "Is shipping free?",
            "Do I pay for delivery?",
            "How expensive is delivery?",
            "Are there delivery costs?",
        )
    ],
    *[
        (q, "store.hours")
        for q in (
            "When is the store open?",
            "What are your opening hours?",
            "Are you open on Sunday?",
            "What time does the shop close?",
            "When do you open in the morning?",
            "Until what time is the shop open?",
        )
    ],
]
OUT_OF_SCOPE_QUESTIONS = (
    "What is the weather tomorrow?",
    "Who won the football match?",
    "Tell me a joke",
    "What is the capital of France?",
    "Recommend a good movie",
    "How do I bake bread?",
)

RETURN_WINDOW = Source(
    doc_id="refunds", path="policies/refunds.md", section="Return window", anchor="return-window"
)
DAMAGED = Source(
    doc_id="refunds", path="policies/refunds.md", section="Damaged items", anchor="damaged-items"
)
PAYMENT = Source(
    doc_id="refunds", path="policies/refunds.md", section="Refund payment", anchor="refund-payment"
)


def _block(sections: list[tuple[Source, str]]) -> TopicBlock:
    passages = tuple(
        TopicPassage(heading=f"Refunds > {s.section}", ref=s.ref, text=body) for s, body in sections
    )
    context = render_passages(passages)
    return TopicBlock(
        topic="refunds",
        title="Refunds",
        context=context,
        tokens=len(context.split()),
        freshness="2026-01-01",
        sources=tuple(s for s, _ in sections),
        intents=("refund.window",),
        passages=passages,
    )


REFUNDS_BLOCK = _block(
    [
        (
            RETURN_WINDOW,
            "Bikes can be returned within 30 days of delivery. "
            "Returned bikes need their original box.",
        ),
        (DAMAGED, "Damaged bikes are repaired by our workshop for free."),
        (PAYMENT, "Refunds reach your card within five working days."),
    ]
)


def _routed_snapshot(
    router: RouterModel, *, block: TopicBlock = REFUNDS_BLOCK, version: str = "v9"
) -> LoadedSnapshot:
    intents = (
        IntentTemplate(
            intent="refund.window",
            template="You can return a {product} within 30 days.",
            slots=(SlotSpec(name="product", kind="enum", default="bike"),),
            sources=(RETURN_WINDOW,),
            topic="refunds",
        ),
        IntentTemplate(
            intent="shipping.cost",
            template="Shipping costs 5 euros.",
            sources=(Source(doc_id="shipping", path="shipping.md", section="Costs", anchor="c"),),
            topic="shipping",
        ),
    )
    snapshot = Snapshot(
        manifest=Manifest(version=version, created_at="2026-01-01T00:00:00Z"),
        intents=intents,
        topics=(block,),
        fallbacks=(FallbackAnswer(domain="general", text="Please ask support."),),
        blobs={ROUTER_BLOB: router.to_bytes()},
    ).sealed()
    snapshot.verify()
    return LoadedSnapshot(snapshot)


@pytest.fixture(scope="module")
def trained_router() -> RouterModel:
    """A router with a tuned threshold."""
    return train_router(ROUTER_EXAMPLES, OUT_OF_SCOPE_QUESTIONS)


@pytest.fixture(scope="module")
def strict_router() -> RouterModel:
    """A router that never answers on its own (threshold 0.99), so near misses reach L3."""
    examples = [*ROUTER_EXAMPLES, *((q, OUT_OF_SCOPE) for q in OUT_OF_SCOPE_QUESTIONS)]
    return fit_router(examples, threshold=0.99)


def test_l2_renders_the_template_of_the_routed_intent(trained_router: RouterModel) -> None:
    loaded = _routed_snapshot(trained_router)
    answer = answer_question(
        loaded, "how many days to return my bike", slots={"product": "cargo bike"}
    )
    assert answer.layer == "L2"
    assert answer.answer == "You can return a cargo bike within 30 days."
    assert answer.entry_id == "refund.window"
    assert answer.sources == (RETURN_WINDOW,)
    assert answer.cache_key == intent_key("v9", "refund.window", slots={"product": "cargo bike"})
    assert answer.confidence >= trained_router.header.threshold
    assert answer.candidates[0][0] == "refund.window"


def test_l2_uses_slot_defaults(trained_router: RouterModel) -> None:
    answer = answer_question(_routed_snapshot(trained_router), "how many days to return my bike")
    assert answer.answer == "You can return a bike within 30 days."


def test_the_router_abstains_to_the_fallback(trained_router: RouterModel) -> None:
    answer = answer_question(
        _routed_snapshot(trained_router), "who won the tennis final", composer=OfflineProvider()
    )
    assert answer.layer == "SAFE"
    assert answer.answer == "Please ask support."
    assert answer.candidates


def _near_miss(router: RouterModel, question: str) -> None:
    prediction = router.predict(question)
    assert prediction.intent is None
    assert prediction.candidates[0][0] == "refund.window"
    assert prediction.confidence >= router.header.threshold * 0.75


def test_l3_composes_from_the_topic_block_and_cites_the_section_used(
    strict_router: RouterModel,
) -> None:
    question = "Do returned bikes need their original box?"
    _near_miss(strict_router, question)
    answer = answer_question(_routed_snapshot(strict_router), question, composer=OfflineProvider())
    assert answer.layer == "L3"
    assert answer.answer == "Returned bikes need their original box."
    assert answer.sources == (RETURN_WINDOW,)
    assert answer.entry_id is None
    assert answer.cache_key == topic_key("v9", "refunds")
    assert answer.explanation == "composed from topic refunds"


def test_l3_cites_every_section_it_quotes_and_no_other(strict_router: RouterModel) -> None:
    question = "Are returned or damaged bikes repaired?"
    _near_miss(strict_router, question)
    answer = answer_question(_routed_snapshot(strict_router), question, composer=OfflineProvider())
    assert answer.layer == "L3"
    assert "Damaged bikes are repaired" in answer.answer
    assert "Returned bikes need their original box." in answer.answer
    assert answer.sources == (RETURN_WINDOW, DAMAGED)


def test_a_block_compiled_before_passages_were_kept_cites_all_its_sources(
    strict_router: RouterModel,
) -> None:
    question = "Do returned bikes need their original box?"
    older = msgspec.structs.replace(REFUNDS_BLOCK, passages=())
    answer = answer_question(
        _routed_snapshot(strict_router, block=older), question, composer=OfflineProvider()
    )
    assert answer.layer == "L3"
    assert answer.answer == "Returned bikes need their original box."
    assert answer.sources == REFUNDS_BLOCK.sources


def test_l3_needs_a_composer_and_permission(strict_router: RouterModel) -> None:
    question = "Do returned bikes need their original box?"
    loaded = _routed_snapshot(strict_router)
    assert answer_question(loaded, question).layer == "SAFE"
    blocked = answer_question(loaded, question, composer=OfflineProvider(), allow_l3=False)
    assert (blocked.layer, blocked.faq_only) == ("SAFE", True)
    assert not answer_question(loaded, question, composer=OfflineProvider()).faq_only


def test_l3_falls_back_when_nothing_in_the_block_answers(strict_router: RouterModel) -> None:
    question = "Can I return my bike by train?"
    _near_miss(strict_router, question)
    answer = answer_question(_routed_snapshot(strict_router), question, composer=OfflineProvider())
    assert answer.layer == "SAFE"
    assert answer.answer == "Please ask support."


def test_l3_cites_only_the_section_of_quoted_list_lines(strict_router: RouterModel) -> None:
    block = _block(
        [
            (RETURN_WINDOW, "Returned bikes are picked up for free\nReturned bikes need a box"),
            (PAYMENT, "Refunds reach your card within five working days."),
        ]
    )
    question = "Are returned bikes picked up?"
    _near_miss(strict_router, question)
    answer = answer_question(
        _routed_snapshot(strict_router, block=block), question, composer=OfflineProvider()
    )
    assert answer.layer == "L3"
    assert "picked up for free" in answer.answer
    assert answer.sources == (RETURN_WINDOW,)


@pytest.mark.parametrize("far", [False, True])
def test_a_question_far_from_every_class_gets_no_topic_answer(
    strict_router: RouterModel, far: bool
) -> None:
    question = "Do returned bikes need their original box?"
    guess = strict_router.predict(question)
    judged = msgspec.structs.replace(guess, far=far, reason="far" if far else guess.reason)
    answer = answer_question(
        _routed_snapshot(strict_router),
        question,
        composer=OfflineProvider(),
        route=lambda _: judged,
    )
    if far:  # the similarity gate turned refund.window down: no candidate, not even for L3
        assert answer.layer == "SAFE"
        assert answer.candidates == ()
        assert answer.explanation == "far"
    else:
        assert answer.layer == "L3"
        assert answer.candidates == guess.candidates


@pytest.fixture(scope="module")
def hashing() -> HashingEmbedder:
    return HashingEmbedder(dim=256)


@pytest.fixture(scope="module")
def vector_router(hashing: HashingEmbedder) -> RouterModel:
    """A router that reads sentence vectors as well as n-grams."""
    return train_router(
        ROUTER_EXAMPLES, OUT_OF_SCOPE_QUESTIONS, encoder=hashing.embed, encoder_id=hashing.model_id
    )


def test_a_router_that_reads_vectors_needs_an_encoder(vector_router: RouterModel) -> None:
    loaded = _routed_snapshot(vector_router)
    with pytest.raises(PermanentError, match="reads sentence vectors"):
        answer_question(loaded, "how many days to return my bike")
    with pytest.raises(PermanentError, match="no encoder"):
        route_of(vector_router)


def test_the_route_gives_the_vector_router_its_vectors(
    vector_router: RouterModel, hashing: HashingEmbedder
) -> None:
    loaded = _routed_snapshot(vector_router)
    answer = answer_question(
        loaded, "how many days to return my bike", route=route_of(vector_router, hashing.embed)
    )
    assert (answer.layer, answer.entry_id) == ("L2", "refund.window")


def test_the_miss_coverage_gate_counts_routed_answers(
    vector_router: RouterModel, hashing: HashingEmbedder
) -> None:
    loaded = _routed_snapshot(vector_router)
    misses = ["how many days to return my bike", "What is the weather on Mars?"]
    result = miss_coverage(
        loaded, misses, composer=None, route=route_of(vector_router, hashing.embed)
    )
    assert result.value == 0.5
    assert result.detail == "1/2 logged misses now answered"
    assert miss_coverage(loaded, [], composer=None, route=None).value is None
