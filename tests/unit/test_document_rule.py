"""The router's document rule: tuned on stand-ins, deciding document entries by similarity."""

from __future__ import annotations

import numpy as np
import pytest

from providers.embedders import HashingEmbedder
from schemas.errors import CorruptSnapshotError
from schemas.risk import estimated_wrong_rate, expected_wrong_rate
from schemas.router import OUT_OF_SCOPE, RouterModel
from tasks.document_rule import DocumentRule, curated_only, nearest_two, tune_document_rule
from tasks.held_out import Held
from tasks.router import RouterPolicy, train_router


def _unit(rows: np.ndarray) -> np.ndarray:
    unit: np.ndarray = (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float32)
    return unit


def test_expected_wrong_rate_weighs_out_of_scope_traffic() -> None:
    # 90 % of in-scope questions right, 2 % misrouted, 40 % of out-of-scope ones served.
    assert expected_wrong_rate(0.9, 0.02, 0.4, 0.0) == pytest.approx(0.02 / 0.92)
    at_half = expected_wrong_rate(0.9, 0.02, 0.4, 0.5)
    assert at_half == pytest.approx((0.5 * 0.02 + 0.5 * 0.4) / (0.5 * 0.92 + 0.5 * 0.4))
    assert expected_wrong_rate(0.0, 0.0, 0.0, 0.3) == 0.0


def test_estimated_wrong_rate_mixes_the_rules_and_says_when_it_cannot() -> None:
    metrics = {
        "heldout_coverage": 0.9,
        "heldout_misrouted": 0.02,
        "heldout_negatives_served": 0.4,
        "document_coverage": 0.5,
        "document_misrouted": 0.1,
        "document_negatives_served": 0.0,
    }
    curated = estimated_wrong_rate(metrics, 0.05)
    documents = estimated_wrong_rate(metrics, 0.05, document_share=1.0)
    mixed = estimated_wrong_rate(metrics, 0.05, document_share=0.5)
    assert curated is not None
    assert documents is not None
    assert mixed is not None
    assert documents == pytest.approx(0.95 * 0.1 / (0.95 * 0.6), abs=1e-4)
    assert min(curated, documents) < mixed < max(curated, documents)
    assert estimated_wrong_rate({"heldout_coverage": 0.9}, 0.05) is None


def test_nearest_two_leaves_the_own_class_out_when_asked() -> None:
    anchors = _unit(np.eye(3, dtype=np.float32))
    labels = np.array([0, 1, 2])
    query = _unit(np.array([[1.0, 0.5, 0.0]], dtype=np.float32))
    found, top, second = nearest_two(query, anchors, labels, 3)
    assert found.tolist() == [0]
    assert top[0] > second[0]
    found, top, _ = nearest_two(query, anchors, labels, 3, exclude=np.array([0]))
    assert found.tolist() == [1]
    assert top[0] == pytest.approx(float(query[0, 1]))


def test_tuning_serves_separable_documents_and_keeps_a_margin_for_near_ones() -> None:
    rng = np.random.default_rng(7)
    dim, classes = 32, 12
    centres = _unit(rng.normal(size=(classes, dim)).astype(np.float32))
    headings = centres
    texts = _unit(centres + 0.3 * rng.normal(size=(classes, dim)).astype(np.float32))
    stand_ins = [(k, headings[k], texts[k]) for k in range(classes)]
    rule = tune_document_rule(
        headings,
        np.arange(classes),
        classes,
        documents=stand_ins,
        out_of_scope=np.zeros((0, dim), np.float32),
        wrong_target=0.02,
        oos_share=0.05,
    )
    assert rule.metrics["document_coverage"] == 1.0
    assert rule.metrics["document_wrong_rate"] <= 0.02
    # Every section text is served at the tuned rule...
    _, top, second = nearest_two(texts, headings, np.arange(classes), classes)
    assert ((top >= rule.threshold) & (top - second >= rule.margin)).all()
    # ...and a heading asked of the others (a left-out section) is not, mostly.
    _, left, left_second = nearest_two(
        headings, headings, np.arange(classes), classes, exclude=np.arange(classes)
    )
    leaked = ((left >= rule.threshold) & (left - left_second >= rule.margin)).mean()
    assert leaked == pytest.approx(rule.metrics["document_negatives_served"], abs=1e-4)


def test_nearest_two_leaves_a_rows_own_anchor_out_when_asked() -> None:
    anchors = _unit(np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0]], np.float32))
    labels = np.array([0, 0, 1])
    found, top, _ = nearest_two(anchors[:2], anchors, labels, 2, exclude_anchor=np.array([0, -1]))
    assert found.tolist() == [0, 0]
    assert top[0] == pytest.approx(float(anchors[0] @ anchors[1]))  # through the other phrasing
    assert top[1] == pytest.approx(1.0)  # -1: nothing left out


def _phrased(
    classes: int, per: int, seed: int = 3
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Classes each with ``per`` phrasings near a centre, and a section text far from them."""
    rng = np.random.default_rng(seed)
    dim = 48
    centres = _unit(rng.normal(size=(classes, dim)).astype(np.float32))
    labels = np.repeat(np.arange(classes), per)
    noise = rng.normal(size=(classes * per, dim)).astype(np.float32)
    phrasings = _unit(centres[labels] + 0.25 * noise)
    texts = _unit(centres + 1.2 * rng.normal(size=(classes, dim)).astype(np.float32))
    return centres, labels, phrasings, texts


def test_held_out_model_phrasings_are_the_positives_instead_of_section_texts() -> None:
    classes, per = 10, 3
    _, labels, phrasings, texts = _phrased(classes, per)
    documents = [(k, phrasings[k * per], texts[k]) for k in range(classes)]

    def tuned(model_phrasings: bool) -> DocumentRule:
        return tune_document_rule(
            phrasings,
            labels,
            classes,
            documents=documents,
            out_of_scope=np.zeros((0, phrasings.shape[1]), np.float32),
            wrong_target=0.05,
            oos_share=0.05,
            model_phrasings=model_phrasings,
        )

    model, templates = tuned(True), tuned(False)

    assert (
        model.metrics["document_model_phrasings"],
        templates.metrics["document_model_phrasings"],
    ) == (1.0, 0.0)

    assert model.metrics["document_positives"] == classes * per
    assert templates.metrics["document_positives"] == classes  # one stand-in row each here
    assert model.metrics["document_negatives"] == classes * per  # every phrasing, left out
    assert templates.metrics["document_negatives"] == classes  # the headings
    # the texts are poor stand-ins here; the phrasings find their entry through each other
    assert model.metrics["document_coverage"] > templates.metrics["document_coverage"]
    found, top, second = nearest_two(
        phrasings, phrasings, labels, classes, exclude_anchor=np.arange(len(labels))
    )
    served = (found == labels) & (top >= model.threshold) & (top - second >= model.margin)
    assert served.mean() == pytest.approx(model.metrics["document_coverage"], abs=1e-4)


def test_two_stand_ins_share_an_entrys_weight_and_the_easier_one_opens_the_rule() -> None:
    rng = np.random.default_rng(11)
    dim, classes = 32, 12
    headings = _unit(rng.normal(size=(classes, dim)).astype(np.float32))
    # Section texts far from their headings (as where pages overlap), and the heading followed
    # by its text, much nearer: a real question lies between the two.
    texts = _unit(headings + 1.5 * rng.normal(size=(classes, dim)).astype(np.float32))
    after = _unit(headings + 0.3 * rng.normal(size=(classes, dim)).astype(np.float32))

    def tuned(documents: list[tuple[int, np.ndarray, np.ndarray]]) -> DocumentRule:
        return tune_document_rule(
            headings,
            np.arange(classes),
            classes,
            documents=documents,
            out_of_scope=np.zeros((0, dim), np.float32),
            wrong_target=0.05,
            oos_share=0.05,
        )

    alone = tuned([(k, headings[k], texts[k]) for k in range(classes)])
    both = tuned([(k, headings[k], np.stack([texts[k], after[k]])) for k in range(classes)])
    assert both.metrics["document_positives"] == 2 * classes
    # The hard rows alone find no feasible rule: the strictest, serving nothing.
    assert alone.metrics["document_coverage"] == 0.0
    assert alone.threshold == pytest.approx(0.95)
    # With both, an entry's rows weigh a half each: the coverage counts the easy rows served.
    found, top, second = nearest_two(after, headings, np.arange(classes), classes)
    easy = (found == np.arange(classes)) & (top >= both.threshold) & (top - second >= both.margin)
    found, top, second = nearest_two(texts, headings, np.arange(classes), classes)
    hard = (found == np.arange(classes)) & (top >= both.threshold) & (top - second >= both.margin)
    assert easy.sum() > 0
    assert both.metrics["document_coverage"] == pytest.approx(
        (easy.sum() + hard.sum()) / (2 * classes), abs=1e-4
    )


def test_an_entry_left_with_one_phrasing_is_tried_with_its_section_text() -> None:
    _, labels, phrasings, texts = _phrased(4, 3)
    keep = np.array([0, 3, 4, 5, 6, 7, 8, 9, 10, 11])  # class 0 keeps one phrasing
    rule = tune_document_rule(
        phrasings[keep],
        labels[keep],
        4,
        documents=[(k, phrasings[k * 3], texts[k]) for k in range(4)],
        out_of_scope=np.zeros((0, phrasings.shape[1]), np.float32),
        wrong_target=0.05,
        oos_share=0.05,
        model_phrasings=True,
    )
    assert rule.metrics["document_positives"] == 1 + 3 * 3


def test_tuning_falls_back_to_the_strictest_rule_when_nothing_meets_the_target() -> None:
    same = _unit(np.ones((3, 4), np.float32))
    rule = tune_document_rule(
        same,
        np.arange(3),
        3,
        documents=[(k, same[k], same[k]) for k in range(3)],
        out_of_scope=same,
        wrong_target=0.01,
        oos_share=0.5,
    )
    assert rule.threshold == pytest.approx(0.95)
    assert rule.metrics["document_coverage"] == 0.0


def test_curated_only_hides_document_classes_from_the_probabilities_rule() -> None:
    held = [
        Held("in", "doc.a", 0.9, True, "doc.a"),
        Held("in", "doc.a", 0.8, False, "faq.x"),
        Held("negative", "faq.x", 0.7, False, OUT_OF_SCOPE),
    ]
    seen = curated_only(held, {"doc.a": "text"})
    assert [h.truth for h in seen] == ["faq.x", OUT_OF_SCOPE]
    assert seen[0].predicted == OUT_OF_SCOPE  # a document guess is not the curated rule's


DOCS = {
    "doc.refunds": "Refunds are paid to the original card within ten working days of the return.",
    "doc.shipping": "Orders ship from our warehouse in two days and arrive within a week.",
    "doc.warranty": "Every frame carries a lifetime warranty against manufacturing defects.",
}
HEADINGS = {
    "doc.refunds": "How long does a refund take?",
    "doc.shipping": "When will my order ship?",
    "doc.warranty": "What does the frame warranty cover?",
}


def _examples() -> list[tuple[str, str]]:
    pairs = [(h, c) for c, h in HEADINGS.items()]
    pairs += [(f"Tell me about {h.lower()}", c) for c, h in HEADINGS.items()]
    for k in range(6):
        pairs += [
            (f"reset my password please {k}", "faq.password"),
            (f"open hours {k}", "faq.hours"),
        ]
    return pairs


def test_train_router_decides_documents_by_similarity_and_round_trips() -> None:
    embedder = HashingEmbedder()
    router = train_router(
        _examples(),
        ["what is the weather like on mars"],
        encoder=embedder.embed,
        encoder_id=embedder.model_id,
        documents=DOCS,
        policy=RouterPolicy(wrong_target=0.2, oos_share=0.05),
    )
    assert router.documents == frozenset(DOCS)
    assert router.header.anchor_threshold is not None
    assert "document_coverage" in router.header.metrics
    again = RouterModel.from_bytes(router.to_bytes())
    assert again.documents == router.documents
    assert again.header.anchor_threshold == router.header.anchor_threshold

    question = "How long does a refund take?"
    found = again.predict(question, embedder.embed([question])[0])
    assert found.intent == "doc.refunds"
    assert "nearest to a phrasing of doc.refunds" in found.reason

    curated = "reset my password please 3"
    assert again.predict(curated, embedder.embed([curated])[0]).intent == "faq.password"


def test_document_classes_are_never_served_by_the_probabilities_alone() -> None:
    embedder = HashingEmbedder()
    router = train_router(
        _examples(), [], encoder=embedder.embed, encoder_id=embedder.model_id, documents=DOCS
    )
    question = "How long does a refund take?"
    vector = embedder.embed([question])[0]
    # Without the vector the document rule cannot run: the probabilities must abstain.
    probabilities = router._predict(question, vector)
    assert probabilities.intent is None
    assert "document entry" in probabilities.reason


def test_corrupt_anchors_are_refused() -> None:
    embedder = HashingEmbedder()
    router = train_router(
        _examples(), [], encoder=embedder.embed, encoder_id=embedder.model_id, documents=DOCS
    )
    assert router.anchors is not None
    assert router.anchor_labels is not None
    with pytest.raises(CorruptSnapshotError, match="anchors"):
        RouterModel(
            router.header,
            router.buckets,
            router.idf,
            router.weights,
            router.bias,
            router.embedding_weights,
            router.embedding_bias,
            router.centroids,
            router.anchors[:, :5],
            router.anchor_labels,
        )


@pytest.mark.parametrize(
    ("model_phrasings", "basis"),
    [
        (True, "the model's questions held out"),
        (False, "section texts asked as questions, alone and after"),
    ],
)
def test_the_risk_estimate_says_what_stood_in_for_document_questions(
    model_phrasings: bool, basis: str
) -> None:
    embedder = HashingEmbedder()
    router = train_router(
        _examples(),
        [],
        encoder=embedder.embed,
        encoder_id=embedder.model_id,
        documents=DOCS,
        model_phrasings=model_phrasings,
    )
    assert basis in router.estimate_basis
    # the model's two questions per entry, or the section's two stand-ins (text; heading + text)
    assert router.header.metrics["document_positives"] == 6
