"""Train the L2 router at compile time (scikit-learn), export it as plain arrays.

Examples are every approved entry's canonical question and paraphrases; known out-of-scope
questions become an explicit out-of-scope class. Two multinomial logistic regressions are fitted,
one on hashed word/character n-grams (TF-IDF) and, when an encoder is given, one on the
question's sentence vector (MiniLM's last three layers, see
:func:`providers.embedders.router_embedder`); the router averages their probabilities, the
n-gram head weighted by one of :data:`WORDS_WEIGHTS`, chosen with the threshold.

The decision threshold is tuned on held-out data the final model never learns from: paraphrases
held out of training (two-fold for small sets, a fifth for large ones), the known out-of-scope
questions, and every question of a few classes left out of training altogether, which stand in
for the intents the knowledge lacks. The threshold is the lowest one whose expected wrong-answer
rate, with :data:`OOS_PRIOR` of the traffic out of scope, meets :data:`WRONG_TARGET`: the
router answers as much as it can without being wrong. Each weight of the n-gram head is tuned
so, and the weight that answers the most held-out questions rightly is kept (on a tie, the one
serving the fewest stand-ins for unknown intents).
"""

from __future__ import annotations

import math
import warnings
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from typing import Final

import msgspec
import numpy as np
import numpy.typing as npt
from scipy import sparse

from schemas.arrays import Floats
from schemas.features import hashed_features
from schemas.keys import content_hash
from schemas.policies import OOS_PRIOR, WRONG_TARGET, RouterPolicy
from schemas.router import OUT_OF_SCOPE, RouterHeader, RouterModel
from tasks.document_rule import (
    Anchors,
    DocumentRule,
    curated_only,
    document_anchors,
    tune_documents,
)
from tasks.held_out import (
    GRID,
    JudgeVariants,
    Thresholds,
    held_out_variants,
    judge_variants,
    tune_rule,
)

__all__ = [
    "REUSE_OVERLAP",
    "Encoder",
    "RouterPolicy",
    "Tuning",
    "example_digests",
    "fit_router",
    "train_router",
    "vector_c",
]

DEFAULT_THRESHOLD: Final = 0.5
C: Final = 20.0
C_VECTORS: Final = 10.0
"""Inverse regularisation of the sentence-vector head for a 384-dim vector; a wider one (the
router's three concatenated layer blocks, scaled to unit length) gets proportionally more, see
:func:`vector_c`."""
WORDS_WEIGHTS: Final = (0.5, 0.25, 0.0)
"""The n-gram head's weights in the average that tuning tries (ranked by :func:`_preference`)."""
PROBE_ITERATIONS: Final = 100
REUSE_OVERLAP: Final = 0.95


Encoder = Callable[[Sequence[str]], Floats]
"""Questions to unit sentence vectors (rows), e.g. a cached MiniLM embedder."""


def _ngram_block(
    questions: Sequence[str],
) -> tuple[sparse.csr_matrix, npt.NDArray[np.int64], Floats]:
    features = [hashed_features(q) for q in questions]
    df: Counter[int] = Counter(b for f in features for b in f)
    buckets = np.array(sorted(df), dtype=np.int64)
    position = {int(b): i for i, b in enumerate(buckets)}
    n = len(questions)
    idf = np.array([math.log((1 + n) / (1 + df[int(b)])) + 1.0 for b in buckets], dtype=np.float32)
    rows: list[int] = []
    cols: list[int] = []
    vals: list[float] = []
    for r, f in enumerate(features):
        weighted = {position[b]: v * float(idf[position[b]]) for b, v in f.items()}
        norm = math.sqrt(sum(v * v for v in weighted.values())) or 1.0
        for c, v in weighted.items():
            rows.append(r)
            cols.append(c)
            vals.append(v / norm)
    matrix = sparse.csr_matrix((vals, (rows, cols)), shape=(n, len(buckets)), dtype=np.float32)
    return matrix, buckets, idf


def vector_c(width: int) -> float:
    """The sentence-vector head's inverse regularisation for vectors of ``width`` dims.

    Concatenating k unit blocks and rescaling to unit length shrinks every feature by
    sqrt(k); scaling C by k keeps each block regularised as it would be alone.
    """
    return C_VECTORS * max(width, 1) / 384


def _fit_head(
    features: sparse.csr_matrix | Floats,
    labels: npt.NDArray[np.int64],
    classes: int,
    *,
    c: float,
    max_iter: int,
    initial: tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]] | None,
) -> tuple[Floats, Floats]:
    """One multinomial logistic regression: ``(weights (features x classes), bias)``."""
    width = features.shape[1]
    if classes == 1:
        return np.zeros((width, 1), dtype=np.float32), np.zeros(1, dtype=np.float32)
    # scikit-learn loads when a router is fitted, not on import (a cached router needs none).
    from sklearn.exceptions import ConvergenceWarning  # noqa: PLC0415
    from sklearn.linear_model import LogisticRegression  # noqa: PLC0415

    model = LogisticRegression(C=c, max_iter=max_iter, warm_start=initial is not None)
    if initial is not None:
        model.coef_, model.intercept_ = initial
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        # Few phrasings per class are normal for small knowledge folders, not a regression task.
        warnings.filterwarnings("ignore", "The number of unique classes", UserWarning)
        model.fit(features, labels)
    coef = np.asarray(model.coef_, dtype=np.float32)
    intercept = np.asarray(model.intercept_, dtype=np.float32)
    if classes == 2:  # binary models keep one row: expand to a two-class softmax
        coef = np.vstack([-coef / 2, coef / 2])
        intercept = np.array([-intercept[0] / 2, intercept[0] / 2], dtype=np.float32)
    return np.ascontiguousarray(coef.T), intercept


def fit_router(
    examples: Sequence[tuple[str, str]],
    *,
    vectors: Floats | None = None,
    encoder_id: str | None = None,
    threshold: float = DEFAULT_THRESHOLD,
    words_weight: float = WORDS_WEIGHTS[0],
    max_iter: int = 300,
    start: RouterModel | None = None,
) -> RouterModel:
    """Fit a router on ``(question, class)`` pairs: an n-gram head and, given the questions'
    sentence ``vectors``, a sentence-vector head (see :mod:`schemas.router`).

    A fit stops after ``max_iter`` L-BFGS iterations even if not fully converged: the
    threshold is tuned on held-out predictions of such fits, so what matters is that the
    tuning and the final model are fitted alike, not the last digits of the optimum. With
    ``start`` (a router over the same classes, e.g. the last compile's), each head begins from
    its weights, so a training set that changed a little converges in a few iterations.
    """
    ngrams, buckets, idf = _ngram_block([q for q, _ in examples])
    classes = sorted({c for _, c in examples})
    labels = np.array([classes.index(c) for _, c in examples])
    words, meaning = _initial_weights(start, classes, buckets) if start else (None, None)
    if meaning is not None and (vectors is None or meaning[0].shape[1] != vectors.shape[1]):
        meaning = None
    weights, bias = _fit_head(ngrams, labels, len(classes), c=C, max_iter=max_iter, initial=words)
    vector_weights = vector_bias = None
    if vectors is not None:
        vector_weights, vector_bias = _fit_head(
            vectors,
            labels,
            len(classes),
            c=vector_c(vectors.shape[1]),
            max_iter=max_iter,
            initial=meaning,
        )
    header = RouterHeader(
        classes=tuple(classes),
        threshold=threshold,
        trained_on=len(examples),
        embedder=encoder_id if vectors is not None else None,
        embedding_dim=0 if vectors is None else vectors.shape[1],
        combine="mean",
        words_weight=words_weight,
    )
    centroids = None if vectors is None else _centroids(vectors, labels, len(classes))
    return RouterModel(header, buckets, idf, weights, bias, vector_weights, vector_bias, centroids)


def _centroids(vectors: Floats, labels: npt.NDArray[np.int64], classes: int) -> Floats:
    """Each class's normalised mean training vector (rows in class order)."""
    sums = np.zeros((classes, vectors.shape[1]), dtype=np.float64)
    np.add.at(sums, labels, vectors.astype(np.float64))
    norms = np.linalg.norm(sums, axis=1, keepdims=True)
    centroids: Floats = (sums / np.maximum(norms, 1e-12)).astype(np.float32)
    return centroids


Initial = tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]


def _initial_weights(
    start: RouterModel, classes: Sequence[str], buckets: npt.NDArray[np.int64]
) -> tuple[Initial | None, Initial | None]:
    """``start``'s head weights laid out for a new feature space (``None`` where they cannot
    be: other classes, an older router layout)."""
    if tuple(classes) != start.header.classes or len(classes) < 3:
        return None, None
    if start.header.combine != "mean" or len(start.buckets) == 0:
        return None, None
    coef = np.zeros((len(classes), len(buckets)), dtype=np.float64)
    positions = np.clip(np.searchsorted(start.buckets, buckets), 0, len(start.buckets) - 1)
    known = start.buckets[positions] == buckets
    coef[:, known] = start.weights[positions[known]].T
    words = (coef, start.bias.astype(np.float64))
    meaning = None
    if start.embedding_weights is not None and start.embedding_bias is not None:
        meaning = (
            start.embedding_weights.T.astype(np.float64),
            start.embedding_bias.astype(np.float64),
        )
    return words, meaning


class Tuning(msgspec.Struct, frozen=True, kw_only=True):
    """A tuned threshold and the training examples it was tuned on (as digests)."""

    digests: tuple[str, ...]
    threshold: float
    agreed: float | None = None
    words_weight: float = WORDS_WEIGHTS[0]
    similarity: float | None = None
    wrong_target: float = WRONG_TARGET
    oos_share: float = OOS_PRIOR
    similarity_gate: bool = False
    anchor_threshold: float | None = None
    anchor_margin: float = 0.0
    metrics: dict[str, float]


def example_digests(
    examples: Sequence[tuple[str, str]], out_of_scope: Sequence[str]
) -> tuple[str, ...]:
    """Sorted digests of every training pair (the identity of a training set)."""
    pairs = [*examples, *((q, OUT_OF_SCOPE) for q in out_of_scope)]
    return tuple(sorted({content_hash(f"{c}\x1f{q}", 12) for q, c in pairs}))


def overlap(a: Sequence[str], b: Sequence[str]) -> float:
    """Jaccard overlap of two digest sets."""
    sa, sb = set(a), set(b)
    return len(sa & sb) / len(sa | sb) if sa | sb else 1.0


def train_router(
    examples: Sequence[tuple[str, str]],
    out_of_scope: Sequence[str],
    *,
    encoder: Encoder | None = None,
    encoder_id: str | None = None,
    previous: Tuning | None = None,
    start: RouterModel | None = None,
    policy: RouterPolicy | None = None,
    documents: Mapping[str, str] | None = None,
    model_phrasings: bool = False,
) -> RouterModel:
    """Tune the threshold on held-out examples (to ``policy``), then fit on everything.

    ``documents`` maps the classes compiled from document sections to their section text:
    with an encoder, they are decided by the document rule (:mod:`tasks.document_rule`), and
    the probabilities' rule is tuned on the curated classes alone. ``model_phrasings``: a
    language model wrote those classes' phrasings, so held out they stand in for questions.

    A threshold tuned on a training set that shares at least :data:`REUSE_OVERLAP` of its
    examples with this one (``previous``, e.g. the last compile's) is reused: one changed
    document hardly moves it, and a partial recompile then fits the router only once — from
    ``start``'s weights when given.
    """
    everything = list(dict.fromkeys(examples))
    everything += [(q, OUT_OF_SCOPE) for q in dict.fromkeys(out_of_scope)]
    vectors = encoder([q for q, _ in everything]) if encoder is not None else None
    digests = example_digests(examples, out_of_scope)
    policy = policy or RouterPolicy()
    docs = {c: t for c, t in (documents or {}).items() if any(c == k for _, k in everything)}
    if vectors is None:
        docs = {}
    anchors = document_anchors(everything, vectors, docs)
    same_policy = previous is not None and (
        previous.wrong_target,
        previous.oos_share,
        previous.similarity_gate,
    ) == (policy.wrong_target, policy.oos_share, policy.similarity_gate)
    if (
        previous is not None
        and same_policy
        and bool(docs) == (previous.anchor_threshold is not None)
        and (shared := overlap(previous.digests, digests)) >= REUSE_OVERLAP
    ):
        model = fit_router(
            everything,
            vectors=vectors,
            encoder_id=encoder_id,
            words_weight=previous.words_weight,
            start=start,
        )
        agreed = previous.threshold if previous.agreed is None else previous.agreed
        metrics = {**previous.metrics, "threshold_reused_overlap": round(shared, 4)}
        rule = Thresholds(previous.threshold, agreed, metrics, previous.similarity)
        reused = None
        if previous.anchor_threshold is not None:
            reused = DocumentRule(previous.anchor_threshold, previous.anchor_margin, {})
        return _with_rule(model, rule, anchors, reused, policy)

    weights = WORDS_WEIGHTS if vectors is not None else WORDS_WEIGHTS[:1]

    def probe(train: Sequence[tuple[str, str]], train_vectors: Floats | None) -> JudgeVariants:
        model = fit_router(
            train, vectors=train_vectors, encoder_id=encoder_id, max_iter=PROBE_ITERATIONS
        )
        return lambda question, vector: judge_variants(model, question, vector, weights)

    document: DocumentRule | None = None
    if anchors is not None:
        assert encoder is not None  # there are vectors, so an encoder
        assert vectors is not None
        document = tune_documents(
            everything, vectors, anchors, docs, encoder, policy, model_phrasings=model_phrasings
        )
    curated = [pair for pair in everything if pair[1] not in docs]
    if not any(c != OUT_OF_SCOPE for _, c in curated):
        model = fit_router(everything, vectors=vectors, encoder_id=encoder_id)
        rule = Thresholds(GRID[-1], GRID[-1], {})
        return _with_rule(model, rule, anchors, document, policy)
    held = [
        curated_only(variant, docs)
        for variant in held_out_variants(everything, vectors, probe, len(weights))
    ]
    if not any(h.kind == "in" for h in held[0]):
        model = fit_router(everything, vectors=vectors, encoder_id=encoder_id)
        rule = Thresholds(model.header.threshold, model.header.threshold, {})
        return _with_rule(model, rule, anchors, document, policy)
    rules = [tune_rule(variant, policy) for variant in held]
    chosen = max(range(len(rules)), key=lambda i: _preference(rules[i], i))
    model = fit_router(
        everything, vectors=vectors, encoder_id=encoder_id, words_weight=weights[chosen]
    )
    return _with_rule(model, rules[chosen], anchors, document, policy)


def _preference(rule: Thresholds, order: int) -> tuple[float, float, int]:
    """How a tuned rule ranks among the words weights: most held-out questions answered
    rightly, then (when held-out paraphrases are too easy to tell the weights apart) fewest
    stand-ins for unknown intents served, then the earlier weight."""
    metrics = rule.metrics
    return (
        metrics.get("heldout_coverage", -1.0),
        -metrics.get("heldout_negatives_served", 1.0),
        -order,
    )


def _with_rule(
    model: RouterModel,
    rule: Thresholds,
    anchors: Anchors = None,
    document: DocumentRule | None = None,
    policy: RouterPolicy | None = None,
) -> RouterModel:
    """``model`` deciding by ``rule`` (its thresholds and the metrics they were tuned to) and,
    for the classes of ``anchors``, by the ``document`` rule; the metrics also record the
    ``policy`` they were tuned to (``policy_wrong_target``, ``policy_oos_share``)."""
    header = msgspec.structs.replace(
        model.header,
        threshold=rule.threshold,
        agreed_threshold=rule.agreed if model.embedding_weights is not None else None,
        min_similarity=rule.similarity if model.centroids is not None else None,
        metrics={
            **rule.metrics,
            **(document.metrics if document else {}),
            **(
                {"policy_wrong_target": policy.wrong_target, "policy_oos_share": policy.oos_share}
                if policy
                else {}
            ),
        },
        anchor_threshold=document.threshold if document and anchors is not None else None,
        anchor_margin=document.margin if document and anchors is not None else 0.0,
    )
    return RouterModel(
        header,
        model.buckets,
        model.idf,
        model.weights,
        model.bias,
        model.embedding_weights,
        model.embedding_bias,
        model.centroids,
        *(anchors if anchors is not None and document is not None else (None, None)),
    )
