"""The L2 router: training, prediction, abstention and its pickle-free storage format."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import zipfile
from collections.abc import Callable
from pathlib import Path

import msgspec
import numpy as np
import pytest

from providers.embedders import HashingEmbedder
from schemas.errors import CorruptSnapshotError
from schemas.features import hashed_features
from schemas.router import OUT_OF_SCOPE, RouterHeader, RouterModel
from tasks.held_out import held_out_variants, judge, judge_variants, tune_rule
from tasks.router import (
    WORDS_WEIGHTS,
    RouterPolicy,
    Tuning,
    example_digests,
    fit_router,
    train_router,
)

ROOT = Path(__file__).resolve().parents[2]

INTENTS: dict[str, tuple[str, ...]] = {
    "refund.window": (
        "How long do I have to return a bike?",
        "What is the return window?",
        "How many days can I send my bike back?",
        "Can I still return my bike after two weeks?",
        "Until when can I return a purchase?",
        "Return period for bikes",
        "How much time do I have for a return?",
        "Is there a deadline to return my order?",
    ),
    "shipping.cost": (
        "How much does shipping cost?",
        "What are the delivery fees?",
        "Is shipping free?",
        "Do I pay for delivery?",
        "What is the shipping price to Germany?",
        "How expensive is delivery?",
        "Shipping charges for my order",
        "Are there delivery costs?",
    ),
    "store.hours": (
        "When is the store open?",
        "What are your opening hours?",
        "Are you open on Sunday?",
        "What time does the shop close?",
        "Opening times of the shop",
        "When do you open in the morning?",
        "Is the store open late on Friday?",
        "Until what time is the shop open?",
    ),
    "account.password": (
        "How do I reset my password?",
        "I forgot my password",
        "Change my account password",
        "Password reset link not working",
        "How can I set a new password?",
        "I can't log in, forgot password",
        "Where do I update my password?",
        "Reset login password",
    ),
}
OUT_OF_SCOPE_EXAMPLES = (
    "What is the weather tomorrow?",
    "Who won the football match?",
    "Tell me a joke",
    "What is the capital of France?",
    "Recommend a good movie",
    "How do I bake bread?",
    "What is the meaning of life?",
    "Translate hello into Spanish",
)
EXAMPLES = [(q, intent) for intent, phrasings in INTENTS.items() for q in phrasings]

PARAPHRASES = [
    ("how many days to return my bike", "refund.window"),
    ("what does delivery cost", "shipping.cost"),
    ("what time do you open on saturday", "store.hours"),
    ("i need to reset my password", "account.password"),
]
UNRELATED = [
    "who is the president of the united states",
    "sing me a song",
    "what is the capital of spain",
]


@pytest.fixture(scope="module")
def router() -> RouterModel:
    """A router trained on n-grams alone."""
    return train_router(EXAMPLES, OUT_OF_SCOPE_EXAMPLES)


@pytest.fixture(scope="module")
def embedder() -> HashingEmbedder:
    """A deterministic sentence encoder that needs no model files."""
    return HashingEmbedder()


@pytest.fixture(scope="module")
def vector_router(embedder: HashingEmbedder) -> RouterModel:
    """A router trained on n-grams plus sentence vectors."""
    return train_router(
        EXAMPLES, OUT_OF_SCOPE_EXAMPLES, encoder=embedder.embed, encoder_id=embedder.model_id
    )


@pytest.mark.parametrize(("question", "intent"), PARAPHRASES)
def test_paraphrases_reach_their_intent(router: RouterModel, question: str, intent: str) -> None:
    prediction = router.predict(question)
    assert prediction.intent == intent
    assert prediction.confidence >= router.header.threshold
    assert prediction.candidates[0] == (intent, prediction.confidence)
    assert intent in prediction.reason


@pytest.mark.parametrize("question", UNRELATED)
def test_unrelated_questions_are_not_answered(router: RouterModel, question: str) -> None:
    prediction = router.predict(question)
    assert prediction.intent is None
    assert prediction.reason


def test_predictions_rank_three_candidates(router: RouterModel) -> None:
    candidates = router.predict("return my bike").candidates
    assert len(candidates) == 3
    assert [p for _, p in candidates] == sorted((p for _, p in candidates), reverse=True)


def test_probabilities_are_a_distribution_over_the_classes(router: RouterModel) -> None:
    probabilities = router.probabilities("is shipping free to france")
    assert probabilities.dtype == np.float32
    assert probabilities.shape == (len(router.header.classes),)
    assert float(probabilities.sum()) == pytest.approx(1.0, abs=1e-5)
    assert (probabilities >= 0).all()


def test_the_header_describes_the_training(router: RouterModel) -> None:
    header = router.header
    assert header.classes == tuple(sorted([*INTENTS, OUT_OF_SCOPE]))
    assert header.trained_on == len(EXAMPLES) + len(OUT_OF_SCOPE_EXAMPLES)
    assert header.embedder is None
    assert not router.needs_embedding
    assert 0.0 < header.threshold < 1.0
    assert {"heldout_coverage", "heldout_wrong_rate", "heldout_size"} <= header.metrics.keys()
    assert 0.0 <= header.metrics["heldout_wrong_rate"] <= 0.02
    assert 0.0 < header.metrics["heldout_coverage"] <= 1.0
    # Each class keeps its first phrasing for training; every other example is held out once.
    assert header.metrics["heldout_size"] == len(EXAMPLES) - len(INTENTS)
    assert header.metrics["heldout_negatives"] == len(OUT_OF_SCOPE_EXAMPLES) - 1


def test_duplicate_examples_are_trained_on_once() -> None:
    once = train_router(EXAMPLES, OUT_OF_SCOPE_EXAMPLES)
    twice = train_router(EXAMPLES * 2, OUT_OF_SCOPE_EXAMPLES * 2)
    assert twice.header == once.header
    assert np.array_equal(twice.weights, once.weights)


def test_a_strict_threshold_makes_the_router_abstain() -> None:
    model = fit_router(EXAMPLES, threshold=0.999)
    prediction = model.predict("how many days to return my bike")
    assert prediction.intent is None
    assert prediction.candidates[0][0] == "refund.window"
    assert "below threshold" in prediction.reason


def test_two_classes_are_a_proper_softmax() -> None:
    model = fit_router(
        [
            ("return my bike", "returns"),
            ("send the bike back", "returns"),
            ("shipping costs", "shipping"),
            ("delivery fee", "shipping"),
        ]
    )
    assert model.predict("return the bike").candidates[0][0] == "returns"
    assert model.predict("shipping fee").candidates[0][0] == "shipping"
    assert float(model.probabilities("bike").sum()) == pytest.approx(1.0, abs=1e-5)


def test_a_single_class_router_is_uniform() -> None:
    model = fit_router([("return my bike", "returns"), ("send it back", "returns")])
    assert model.probabilities("anything at all").tolist() == [1.0]


# --- storage ----------------------------------------------------------------------------------


def test_round_trip_keeps_every_probability(router: RouterModel) -> None:
    loaded = RouterModel.from_bytes(router.to_bytes())
    assert loaded.header == router.header
    for question in [q for q, _ in PARAPHRASES] + UNRELATED + ["", "???"]:
        assert np.array_equal(loaded.probabilities(question), router.probabilities(question))
        assert loaded.predict(question) == router.predict(question)


def test_the_blob_is_numpy_arrays_without_pickle(router: RouterModel) -> None:
    blob = router.to_bytes()
    with zipfile.ZipFile(io.BytesIO(blob)) as archive:
        assert sorted(archive.namelist()) == sorted(
            ["header.npy", "buckets.npy", "idf.npy", "weights.npy", "bias.npy"]
        )
    with np.load(io.BytesIO(blob), allow_pickle=False) as arrays:
        members = {name: arrays[name] for name in arrays.files}
    assert not any(a.dtype.hasobject for a in members.values())
    header = msgspec.json.decode(members["header"].tobytes(), type=RouterHeader)
    assert header == router.header


def test_the_blob_is_deterministic(router: RouterModel) -> None:
    assert RouterModel.from_bytes(router.to_bytes()).to_bytes() == router.to_bytes()


def _npz(**arrays: np.ndarray) -> bytes:
    out = io.BytesIO()
    np.savez(out, allow_pickle=False, **arrays)
    return out.getvalue()


def _members(router: RouterModel) -> dict[str, np.ndarray]:
    with np.load(io.BytesIO(router.to_bytes()), allow_pickle=False) as arrays:
        return {name: arrays[name] for name in arrays.files}


def _without(router: RouterModel, name: str) -> bytes:
    return _npz(**{k: v for k, v in _members(router).items() if k != name})


def _with_header(router: RouterModel, header: bytes) -> bytes:
    return _npz(**{**_members(router), "header": np.frombuffer(header, dtype=np.uint8)})


def _truncated(router: RouterModel) -> bytes:
    blob = router.to_bytes()
    return blob[: len(blob) // 2]


CORRUPTIONS: dict[str, Callable[[RouterModel], bytes]] = {
    "not a router": lambda r: b"hello, I am not a router",
    "a pickle": lambda r: b"\x80\x04K\x01.",
    "a missing array": lambda r: _without(r, "weights"),
    "a header of the wrong shape": lambda r: _with_header(r, b'{"classes": 3}'),
    "arrays that disagree with the header": lambda r: _with_header(
        r, b'{"classes": ["a"], "threshold": 0.5}'
    ),
    "truncated": _truncated,
    "empty": lambda r: b"",
}


@pytest.mark.parametrize("corruption", sorted(CORRUPTIONS))
def test_a_corrupt_blob_raises_corrupt_snapshot(router: RouterModel, corruption: str) -> None:
    with pytest.raises(CorruptSnapshotError):
        RouterModel.from_bytes(CORRUPTIONS[corruption](router))


# --- sentence vectors -------------------------------------------------------------------------


def test_a_vector_router_records_its_encoder(
    vector_router: RouterModel, embedder: HashingEmbedder
) -> None:
    assert vector_router.needs_embedding
    assert vector_router.header.embedder == embedder.model_id
    assert vector_router.header.embedding_dim == embedder.dim
    assert vector_router.embedding_weights is not None
    assert vector_router.embedding_weights.shape == (
        embedder.dim,
        len(vector_router.header.classes),
    )


def test_a_vector_router_needs_the_vector(vector_router: RouterModel) -> None:
    with pytest.raises(CorruptSnapshotError, match="needs a 512-dim vector"):
        vector_router.predict("how many days to return my bike")
    with pytest.raises(CorruptSnapshotError):
        vector_router.predict("return my bike", np.zeros(3, dtype=np.float32))


@pytest.mark.parametrize(("question", "intent"), PARAPHRASES)
def test_a_vector_router_routes_with_the_vector(
    vector_router: RouterModel, embedder: HashingEmbedder, question: str, intent: str
) -> None:
    assert vector_router.predict(question, embedder.embed([question])[0]).intent == intent


def test_a_vector_router_abstains_on_unrelated_text(
    vector_router: RouterModel, embedder: HashingEmbedder
) -> None:
    for question in UNRELATED:
        assert vector_router.predict(question, embedder.embed([question])[0]).intent is None


def test_a_vector_router_round_trips(vector_router: RouterModel, embedder: HashingEmbedder) -> None:
    blob = vector_router.to_bytes()
    with zipfile.ZipFile(io.BytesIO(blob)) as archive:
        assert "embedding_weights.npy" in archive.namelist()
    loaded = RouterModel.from_bytes(blob)
    assert loaded.header == vector_router.header
    for question, _ in PARAPHRASES:
        vector = embedder.embed([question])[0]
        assert np.array_equal(
            loaded.probabilities(question, vector), vector_router.probabilities(question, vector)
        )


def test_a_vector_router_without_its_weights_is_corrupt(vector_router: RouterModel) -> None:
    with pytest.raises(CorruptSnapshotError):
        RouterModel.from_bytes(_without(vector_router, "embedding_weights"))
    with pytest.raises(CorruptSnapshotError, match="embedding bias"):
        RouterModel.from_bytes(_without(vector_router, "embedding_bias"))


def test_a_vector_router_averages_its_two_heads(
    vector_router: RouterModel, embedder: HashingEmbedder
) -> None:
    question = "what does delivery cost"
    vector = embedder.embed([question])[0]
    combined, words, meaning = vector_router.head_probabilities(question, vector)
    assert vector_router.header.combine == "mean"
    assert words is not None
    assert meaning is not None
    weight = vector_router.header.words_weight
    assert weight in WORDS_WEIGHTS
    np.testing.assert_allclose(combined, weight * words + (1 - weight) * meaning, rtol=1e-6)
    assert float(meaning.sum()) == pytest.approx(1.0, abs=1e-5)
    reason = vector_router.predict(question, vector).reason
    assert "wording says shipping.cost" in reason
    assert "meaning says shipping.cost" in reason


def _with_rule(router: RouterModel, **changes: object) -> RouterModel:
    return RouterModel(
        msgspec.structs.replace(router.header, **changes),
        router.buckets,
        router.idf,
        router.weights,
        router.bias,
        router.embedding_weights,
        router.embedding_bias,
        router.centroids,
    )


def test_the_agreement_threshold_applies_only_when_both_heads_agree(
    vector_router: RouterModel, embedder: HashingEmbedder
) -> None:
    question = "what does delivery cost"
    vector = embedder.embed([question])[0]
    _, words, meaning = vector_router.head_probabilities(question, vector)
    assert words is not None
    assert meaning is not None
    assert int(np.argmax(words)) == int(np.argmax(meaning))  # the heads agree here
    strict = _with_rule(vector_router, threshold=0.999, agreed_threshold=None)
    lenient = _with_rule(vector_router, threshold=0.999, agreed_threshold=0.0)
    assert strict.predict(question, vector).intent is None
    assert lenient.predict(question, vector).intent == "shipping.cost"
    # A router whose heads disagree gets no discount: swap one head's classes around.
    crossed = RouterModel(
        lenient.header,
        lenient.buckets,
        lenient.idf,
        lenient.weights,
        lenient.bias,
        None if lenient.embedding_weights is None else lenient.embedding_weights[:, ::-1].copy(),
        None if lenient.embedding_bias is None else lenient.embedding_bias[::-1].copy(),
        lenient.centroids,
    )
    _, words, meaning = crossed.head_probabilities(question, vector)
    assert words is not None
    assert meaning is not None
    assert int(np.argmax(words)) != int(np.argmax(meaning))
    assert crossed.predict(question, vector).intent is None


def test_a_joint_router_of_an_older_snapshot_still_predicts(
    vector_router: RouterModel, embedder: HashingEmbedder
) -> None:
    assert vector_router.embedding_weights is not None
    joint = RouterModel(
        msgspec.structs.replace(vector_router.header, combine="joint"),
        vector_router.buckets,
        vector_router.idf,
        vector_router.weights,
        vector_router.bias,
        vector_router.embedding_weights,
    )
    loaded = RouterModel.from_bytes(joint.to_bytes())
    question = "what does delivery cost"
    vector = embedder.embed([question])[0]
    combined, words, meaning = loaded.head_probabilities(question, vector)
    assert words is None
    assert meaning is None
    index, values = loaded.vectorize(question)
    logits = loaded.bias + values @ loaded.weights[index] + vector @ vector_router.embedding_weights
    expected = np.exp(logits - logits.max())
    np.testing.assert_allclose(combined, expected / expected.sum(), rtol=1e-5)


@pytest.mark.parametrize("weight", [0.0, 0.25, 1.0])
def test_the_words_weight_sets_each_heads_share(
    vector_router: RouterModel, embedder: HashingEmbedder, weight: float
) -> None:
    question = "how expensive is it to ship"
    vector = embedder.embed([question])[0]
    mixed = RouterModel.from_bytes(_with_rule(vector_router, words_weight=weight).to_bytes())
    combined, words, meaning = mixed.head_probabilities(question, vector)
    assert words is not None
    assert meaning is not None
    np.testing.assert_allclose(combined, weight * words + (1 - weight) * meaning, rtol=1e-6)
    best, confidence, _, _ = judge(mixed, question, vector)
    assert (best, confidence) == judge_variants(vector_router, question, vector, [weight])[0][:2]


@pytest.mark.parametrize("weight", [-0.1, 1.5])
def test_a_words_weight_outside_zero_to_one_is_corrupt(
    vector_router: RouterModel, weight: float
) -> None:
    with pytest.raises(CorruptSnapshotError, match="words_weight"):
        _with_rule(vector_router, words_weight=weight)


def test_the_words_weight_is_the_one_answering_most_held_out_questions(
    vector_router: RouterModel, embedder: HashingEmbedder
) -> None:
    everything = [*EXAMPLES, *((q, OUT_OF_SCOPE) for q in OUT_OF_SCOPE_EXAMPLES)]
    vectors = embedder.embed([q for q, _ in everything])

    def probe(train, train_vectors):  # type: ignore[no-untyped-def]
        model = fit_router(train, vectors=train_vectors, encoder_id="e", max_iter=100)
        return lambda q, v: judge_variants(model, q, v, WORDS_WEIGHTS)

    held = held_out_variants(everything, vectors, probe, len(WORDS_WEIGHTS))
    coverage = [tune_rule(variant).metrics.get("heldout_coverage", -1.0) for variant in held]
    served = [tune_rule(variant).metrics.get("heldout_negatives_served", 1.0) for variant in held]
    chosen = WORDS_WEIGHTS.index(vector_router.header.words_weight)
    assert coverage[chosen] == max(coverage)
    tied = [i for i, c in enumerate(coverage) if c == coverage[chosen]]
    assert served[chosen] == min(served[i] for i in tied)  # then the fewest negatives served
    assert chosen == min(i for i in tied if served[i] == served[chosen])  # then the first
    assert vector_router.header.metrics["heldout_coverage"] == coverage[chosen]


def test_an_unknown_combination_is_corrupt(vector_router: RouterModel) -> None:
    with pytest.raises(CorruptSnapshotError, match="combination"):
        _with_rule(vector_router, combine="vote")


# --- features ---------------------------------------------------------------------------------

FEATURE_QUESTIONS = ["How long do I have to return a bike?", "Ünïcode café 🙂", ""]


def test_hashed_features_are_canonical() -> None:
    assert hashed_features("  How LONG can I return?? ") == hashed_features("how long can i return")
    assert hashed_features("") == {}
    features = hashed_features("bike bike bike")
    assert max(features.values()) == pytest.approx(1.0 + np.log(3))


def test_hashed_features_are_the_same_in_another_process() -> None:
    script = (
        "import json, sys\n"
        "from schemas.features import hashed_features\n"
        "qs = json.loads(sys.argv[1])\n"
        "print(json.dumps([sorted(hashed_features(q).items()) for q in qs]))\n"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    result = subprocess.run(
        [sys.executable, "-c", script, json.dumps(FEATURE_QUESTIONS)],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
        env=env,
    )
    theirs = json.loads(result.stdout)
    ours = [[list(item) for item in sorted(hashed_features(q).items())] for q in FEATURE_QUESTIONS]
    assert theirs == ours
    assert theirs[0]


def test_the_lowest_threshold_covers_every_rule(vector_router: RouterModel) -> None:
    ruled = _with_rule(vector_router, threshold=0.9, agreed_threshold=0.4)
    assert ruled.lowest_threshold == 0.4
    assert _with_rule(ruled, agreed_threshold=None).lowest_threshold == 0.9
    assert _with_rule(ruled, threshold=0.3).lowest_threshold == 0.3


def test_a_tuning_made_under_another_policy_is_not_reused() -> None:
    tuning = Tuning(
        digests=example_digests(EXAMPLES, OUT_OF_SCOPE_EXAMPLES), threshold=0.123, metrics={}
    )
    reused = train_router(EXAMPLES, OUT_OF_SCOPE_EXAMPLES, previous=tuning)
    assert reused.header.threshold == 0.123
    assert "threshold_reused_overlap" in reused.header.metrics
    retuned = train_router(
        EXAMPLES, OUT_OF_SCOPE_EXAMPLES, previous=tuning, policy=RouterPolicy(wrong_target=0.05)
    )
    assert "threshold_reused_overlap" not in retuned.header.metrics
    assert retuned.header.threshold != 0.123


def test_a_reused_tuning_keeps_its_words_weight_and_gate(embedder: HashingEmbedder) -> None:
    tuning = Tuning(
        digests=example_digests(EXAMPLES, OUT_OF_SCOPE_EXAMPLES),
        threshold=0.4,
        agreed=0.3,
        words_weight=0.25,
        similarity=0.33,
        metrics={},
    )
    reused = train_router(
        EXAMPLES,
        OUT_OF_SCOPE_EXAMPLES,
        encoder=embedder.embed,
        encoder_id=embedder.model_id,
        previous=tuning,
    )
    assert (reused.header.threshold, reused.header.agreed_threshold) == (0.4, 0.3)
    assert reused.header.words_weight == 0.25
    assert reused.header.min_similarity == 0.33
    ngrams_only = train_router(EXAMPLES, OUT_OF_SCOPE_EXAMPLES, previous=tuning)
    assert ngrams_only.header.min_similarity is None  # no vectors, nothing to gate on


def test_a_vector_router_keeps_each_class_centroid(vector_router: RouterModel) -> None:
    centroids = vector_router.centroids
    assert centroids is not None
    assert centroids.shape == (
        len(vector_router.header.classes),
        vector_router.header.embedding_dim,
    )
    np.testing.assert_allclose(np.linalg.norm(centroids, axis=1), 1.0, rtol=1e-5)


def test_the_similarity_gate_turns_far_questions_down(
    vector_router: RouterModel, embedder: HashingEmbedder
) -> None:
    question = "what does delivery cost"
    vector = embedder.embed([question])[0]
    similarity = vector_router.similarity("shipping.cost", vector)
    assert similarity is not None
    near = _with_rule(vector_router, threshold=0.0, min_similarity=similarity - 0.01)
    far = _with_rule(vector_router, threshold=0.0, min_similarity=similarity + 0.01)
    assert near.predict(question, vector).intent == "shipping.cost"
    assert f"similarity {similarity:.2f}" in near.predict(question, vector).reason
    turned_down = far.predict(question, vector)
    assert turned_down.intent is None
    assert turned_down.far
    assert "far from every phrasing of shipping.cost" in turned_down.reason
    loaded = RouterModel.from_bytes(far.to_bytes())
    assert loaded.header.min_similarity == far.header.min_similarity
    assert loaded.predict(question, vector) == turned_down


def test_a_similarity_gate_without_centroids_is_corrupt(vector_router: RouterModel) -> None:
    gated = _with_rule(vector_router, min_similarity=0.5)
    with pytest.raises(CorruptSnapshotError, match="no centroids"):
        RouterModel.from_bytes(_without(gated, "centroids"))
    with pytest.raises(CorruptSnapshotError, match="centroids do not match"):
        RouterModel(
            gated.header,
            gated.buckets,
            gated.idf,
            gated.weights,
            gated.bias,
            gated.embedding_weights,
            gated.embedding_bias,
            np.zeros((1, 3), dtype=np.float32),
        )
