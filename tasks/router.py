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
from typing import Final, NamedTuple

import msgspec
import numpy as np
import numpy.typing as npt
from scipy import sparse
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression

from schemas.arrays import Floats
from schemas.keys import content_hash
from schemas.policies import OOS_PRIOR, WRONG_TARGET, RouterPolicy
from schemas.router import (
    OUT_OF_SCOPE,
    RouterHeader,
    RouterModel,
    expected_wrong_rate,
    hashed_features,
)
from tasks.document_rule import DocumentRule, tune_document_rule

__all__ = [
    "REUSE_OVERLAP",
    "WRONG_TARGET",
    "Encoder",
    "Held",
    "Judgement",
    "Probe",
    "RouterPolicy",
    "Thresholds",
    "Tuning",
    "Verdict",
    "Verdicts",
    "example_digests",
    "fit_router",
    "held_out_variants",
    "held_out_verdicts",
    "train_router",
    "tune_rule",
    "vector_c",
    "verdict_of",
    "verdicts_of",
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
_HOLDOUT_EVERY: Final = 5
_FOLDS: Final = 2
REUSE_OVERLAP: Final = 0.95
_LARGE: Final = 4000
_GRID: Final = tuple(round(0.01 * i, 2) for i in range(5, 100))
SIMILARITY_GRID: Final = (None, *(round(0.02 * i, 2) for i in range(10, 46)))

"""Minimum centroid similarities tuning tries (``None``: no similarity gate)."""
NOVEL_SHARE: Final = 0.15
"""Share of in-scope classes that tuning trains without, to see how intents the knowledge
lacks are treated (only with at least :data:`_MIN_CLASSES_TO_LEAVE_OUT` classes)."""
_MIN_CLASSES_TO_LEAVE_OUT: Final = 5


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
    embedder: str | None = None,
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
        embedder=embedder if vectors is not None else None,
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


def _folds(examples: Sequence[tuple[str, str]]) -> list[int]:
    """A held-out fold per example (-1: always trained on).

    The first (canonical) phrasing of each class is always trained on. Small sets use two-fold
    cross-validation over all the rest (every phrasing is held out once); large ones hold out a
    fifth.
    """
    seen: set[str] = set()
    large = len(examples) > _LARGE
    folds = []
    for question, label in examples:
        if label not in seen:
            seen.add(label)
            folds.append(-1)
            continue
        bucket = int(content_hash(f"{label}\x1f{question}", 8), 16)
        if large:
            folds.append(0 if bucket % _HOLDOUT_EVERY == 0 else -1)
        else:
            folds.append(bucket % _FOLDS)
    return folds


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


class Held(NamedTuple):
    """One held-out question's verdict during tuning."""

    kind: str
    """``"in"`` (its class was trained on) or ``"negative"`` (a known out-of-scope question,
    or a question of a class left out of training: a stand-in for intents the knowledge
    lacks)."""
    predicted: str
    confidence: float
    agreed: bool
    """Whether both heads ranked ``predicted`` first."""
    truth: str
    similarity: float = 1.0
    """Cosine of the question's vector to ``predicted``'s centroid (1.0 without vectors)."""


class Thresholds(NamedTuple):
    """A tuned decision rule: serve at ``threshold``, or at ``agreed`` when both heads agree,
    and only within ``similarity`` of the best class's centroid (``None``: anywhere)."""

    threshold: float
    agreed: float
    metrics: dict[str, float]
    similarity: float | None = None


def tune_rule(held: Sequence[Held], policy: RouterPolicy | None = None) -> Thresholds:
    """The thresholds that answer the most held-out questions rightly while the expected
    wrong-answer rate, with ``policy.oos_share`` of the traffic out of scope, meets
    ``policy.wrong_target`` (defaults: :data:`OOS_PRIOR`, :data:`WRONG_TARGET`).

    Every rule of the grid is tried: a threshold, a lower one for when both heads agree, and,
    with ``policy.similarity_gate``, a minimum similarity to the best class's centroid
    (:data:`SIMILARITY_GRID`, tried only when the verdicts carry similarities). Ties go to the
    more permissive rule (no similarity gate, then the lower thresholds): held-out paraphrases
    (synthesised ones especially) are often easier than real questions, so when several rules
    answer all of them, the most permissive one that still meets the target answers the most
    real ones. When nothing meets the target, the strictest grid point.
    """
    inside = np.array([h.kind == "in" for h in held], dtype=bool)
    confidence = np.array([h.confidence for h in held], dtype=np.float32)
    agreed = np.array([h.agreed for h in held], dtype=bool)
    answerable = np.array([h.predicted != OUT_OF_SCOPE for h in held], dtype=bool)
    right = np.array([h.predicted == h.truth for h in held], dtype=bool)
    similarity = np.array([h.similarity for h in held], dtype=np.float32)
    n_in, n_out = int(inside.sum()), int((~inside).sum())
    policy = policy or RouterPolicy()
    prior = policy.oos_share if n_out else 0.0
    sizes = {"heldout_size": float(n_in), "heldout_negatives": float(n_out)}
    grid = np.asarray(_GRID, dtype=np.float32)
    allowed = grid[None, :] <= grid[:, None]  # [t, a]: the agreed threshold is the lower one
    gated = policy.similarity_gate and bool((similarity < 1.0).any())
    gates = SIMILARITY_GRID if gated else SIMILARITY_GRID[:1]
    best: tuple[float, float, float, float, int, int, float | None] | None = None
    for gate in gates:
        eligible = answerable if gate is None else answerable & (similarity >= gate)
        correct = _served_counts(confidence, agreed, eligible & inside & right, grid) / (n_in or 1)
        misrouted = _served_counts(confidence, agreed, eligible & inside & ~right, grid) / (
            n_in or 1
        )
        leaked = _served_counts(confidence, agreed, eligible & ~inside, grid) / (n_out or 1)
        wrong = expected_wrong_rate(correct, misrouted, leaked, prior)
        feasible = allowed & (wrong <= policy.wrong_target)
        if not feasible.any():
            continue
        scored = np.where(feasible, correct, -1.0)
        t, a = (int(i) for i in np.unravel_index(int(np.argmax(scored)), scored.shape))
        if best is None or scored[t, a] > best[0]:
            best = (
                float(correct[t, a]),
                float(wrong[t, a]),
                float(leaked[t, a]),
                float(misrouted[t, a]),
                t,
                a,
                gate,
            )
    if best is None:
        return Thresholds(_GRID[-1], _GRID[-1], sizes)
    covered, wrong_rate, leak, astray, t, a, gate = best
    return Thresholds(
        _GRID[t],
        _GRID[a],
        {
            "heldout_coverage": round(covered, 4),
            "heldout_misrouted": round(astray, 4),
            "heldout_wrong_rate": round(wrong_rate, 4),
            "heldout_negatives_served": round(leak, 4),
            **sizes,
        },
        gate,
    )


def _served_counts(
    confidence: Floats,
    agreed: npt.NDArray[np.bool_],
    chosen: npt.NDArray[np.bool_],
    grid: Floats,
) -> npt.NDArray[np.float64]:
    """How many ``chosen`` questions each rule ``[t, a]`` of ``grid`` serves: those whose
    heads disagree at confidence >= t, those whose heads agree at confidence >= a (a <= t)."""

    def at_least(values: Floats) -> npt.NDArray[np.float64]:
        ordered = np.sort(values)
        below = np.searchsorted(ordered, grid, side="left")
        return (len(ordered) - below).astype(np.float64)

    alone = at_least(confidence[chosen & ~agreed])
    together = at_least(confidence[chosen & agreed])
    return alone[:, None] + together[None, :]


def _left_out(classes: Sequence[str], fold: int, folds: int) -> set[str]:
    """The in-scope classes a tuning fold trains without (:data:`NOVEL_SHARE` of them overall,
    spread over the folds), so their questions test how the router treats intents it lacks."""
    inside = [c for c in classes if c != OUT_OF_SCOPE]
    if len(inside) < _MIN_CLASSES_TO_LEAVE_OUT:
        return set()
    ranked = sorted(inside, key=lambda c: content_hash(f"novel\x1f{c}", 8))
    chosen = ranked[: max(1, round(NOVEL_SHARE * len(inside)))]
    return {c for i, c in enumerate(chosen) if i % folds == fold}


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


Judgement = tuple[str, float, bool, float]
"""A verdict: best class, its probability, whether both heads ranked it first, and the
question's similarity to its centroid (1.0 without vectors)."""
Verdict = Callable[[str, Floats | None], Judgement]
"""A fitted probe's verdict on one question."""
Verdicts = Callable[[str, Floats | None], Sequence[Judgement]]
"""A fitted probe's verdicts on one question, one per variant of its decision (e.g. per weight
of the n-gram head)."""
Probe = Callable[[Sequence[tuple[str, str]], Floats | None], Verdict]
"""Fits a router-like model on ``(question, class)`` pairs (and their vectors)."""
VariantsProbe = Callable[[Sequence[tuple[str, str]], Floats | None], Verdicts]


def verdict_of(
    model: RouterModel, question: str, vector: npt.NDArray[np.float32] | None
) -> Judgement:
    """``model``'s best class for ``question``, its probability, whether both heads ranked
    it first, and the question's similarity to that class's centroid."""
    return verdicts_of(model, question, vector, (model.header.words_weight,))[0]


def verdicts_of(
    model: RouterModel,
    question: str,
    vector: npt.NDArray[np.float32] | None,
    weights: Sequence[float],
) -> list[Judgement]:
    """:func:`verdict_of` with the n-gram head weighted by each of ``weights`` in turn (the
    heads are evaluated once)."""
    probs, words, meaning = model.head_probabilities(question, vector)
    if words is None or meaning is None:
        best = int(np.argmax(probs))
        return [(model.header.classes[best], float(probs[best]), False, 1.0)] * len(weights)
    first_words, first_meaning = int(np.argmax(words)), int(np.argmax(meaning))
    found = []
    for weight in weights:
        mixed = weight * words + (1.0 - weight) * meaning
        best = int(np.argmax(mixed))
        agreed = first_words == best == first_meaning
        name = model.header.classes[best]
        near = model.similarity(name, vector)
        found.append((name, float(mixed[best]), agreed, 1.0 if near is None else near))
    return found


def held_out_verdicts(
    everything: Sequence[tuple[str, str]], vectors: Floats | None, probe: Probe
) -> list[Held]:
    """Verdicts on held-out questions of models fitted by ``probe`` without them: the held-out
    folds of :func:`_folds` and, in each fold, every question of the classes :func:`_left_out`
    leaves out of training."""

    def variants(train: Sequence[tuple[str, str]], train_vectors: Floats | None) -> Verdicts:
        verdict = probe(train, train_vectors)
        return lambda question, vector: (verdict(question, vector),)

    return held_out_variants(everything, vectors, variants, 1)[0]


def held_out_variants(
    everything: Sequence[tuple[str, str]],
    vectors: Floats | None,
    probe: VariantsProbe,
    count: int,
) -> list[list[Held]]:
    """:func:`held_out_verdicts` for a probe whose verdicts come in ``count`` variants: one
    list of held-out verdicts per variant."""
    folds = _folds(everything)
    held: list[list[Held]] = [[] for _ in range(count)]
    fold_ids = sorted(set(folds) - {-1})
    classes = sorted({c for _, c in everything})
    for fold in fold_ids:
        novel = _left_out(classes, fold, len(fold_ids))
        train = [i for i, f in enumerate(folds) if f != fold and everything[i][1] not in novel]
        test = [i for i, f in enumerate(folds) if f == fold or everything[i][1] in novel]
        train_examples = [everything[i] for i in train]
        if len({c for _, c in train_examples}) < 2:
            continue
        verdict = probe(train_examples, None if vectors is None else vectors[train])
        for i in test:
            question, truth = everything[i]
            kind = "negative" if truth in novel or truth == OUT_OF_SCOPE else "in"
            found = verdict(question, None if vectors is None else vectors[i])
            for variant, (predicted, confidence, agreed, near) in zip(held, found, strict=True):
                variant.append(Held(kind, predicted, confidence, agreed, truth, near))
    return held


def train_router(
    examples: Sequence[tuple[str, str]],
    out_of_scope: Sequence[str],
    *,
    encoder: Encoder | None = None,
    embedder: str | None = None,
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
    anchors = _anchors(everything, vectors, docs)
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
            embedder=embedder,
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

    def probe(train: Sequence[tuple[str, str]], train_vectors: Floats | None) -> Verdicts:
        model = fit_router(
            train, vectors=train_vectors, embedder=embedder, max_iter=PROBE_ITERATIONS
        )
        return lambda question, vector: verdicts_of(model, question, vector, weights)

    document: DocumentRule | None = None
    if anchors is not None:
        assert encoder is not None  # there are vectors, so an encoder
        assert vectors is not None
        document = _tune_documents(
            everything, vectors, anchors, docs, encoder, policy, model_phrasings=model_phrasings
        )
    curated = [pair for pair in everything if pair[1] not in docs]
    if not any(c != OUT_OF_SCOPE for _, c in curated):
        model = fit_router(everything, vectors=vectors, embedder=embedder)
        rule = Thresholds(_GRID[-1], _GRID[-1], {})
        return _with_rule(model, rule, anchors, document, policy)
    held = [
        _curated_only(variant, docs)
        for variant in held_out_variants(everything, vectors, probe, len(weights))
    ]
    if not any(h.kind == "in" for h in held[0]):
        model = fit_router(everything, vectors=vectors, embedder=embedder)
        rule = Thresholds(model.header.threshold, model.header.threshold, {})
        return _with_rule(model, rule, anchors, document, policy)
    rules = [tune_rule(variant, policy) for variant in held]
    chosen = max(range(len(rules)), key=lambda i: _preference(rules[i], i))
    model = fit_router(everything, vectors=vectors, embedder=embedder, words_weight=weights[chosen])
    return _with_rule(model, rules[chosen], anchors, document, policy)


def _curated_only(held: Sequence[Held], documents: Mapping[str, str]) -> list[Held]:
    """Held-out verdicts as the probabilities' rule sees them when ``documents`` are decided by
    the document rule: their own phrasings are not its to answer, and a question whose best
    class is one of them is not served by it."""
    return [
        h._replace(predicted=OUT_OF_SCOPE) if h.predicted in documents else h
        for h in held
        if not (h.kind == "in" and h.truth in documents)
    ]


Anchors = tuple[Floats, npt.NDArray[np.int64]] | None


def _anchors(
    everything: Sequence[tuple[str, str]],
    vectors: Floats | None,
    documents: Mapping[str, str],
) -> Anchors:
    """The document classes' phrasing vectors and their class indices (in the sorted class
    order a fitted router has)."""
    if vectors is None or not documents:
        return None
    index = {c: k for k, c in enumerate(sorted({c for _, c in everything}))}
    rows = [i for i, (_, c) in enumerate(everything) if c in documents]
    labels = np.array([index[everything[i][1]] for i in rows], np.int64)
    return np.ascontiguousarray(vectors[rows]), labels


def _tune_documents(
    everything: Sequence[tuple[str, str]],
    vectors: Floats,
    anchors: tuple[Floats, npt.NDArray[np.int64]],
    documents: Mapping[str, str],
    encoder: Encoder,
    policy: RouterPolicy,
    *,
    model_phrasings: bool,
) -> DocumentRule:
    """The document rule tuned on held-out model phrasings or section texts, and on left-out
    entries (see :mod:`tasks.document_rule`)."""
    classes = sorted({c for _, c in everything})
    first: dict[str, int] = {}
    for i, (_, c) in enumerate(everything):
        first.setdefault(c, i)
    names = sorted(documents)
    texts = encoder([documents[c] for c in names])
    stand_ins = [(classes.index(c), vectors[first[c]], texts[k]) for k, c in enumerate(names)]
    outside = [i for i, (_, c) in enumerate(everything) if c == OUT_OF_SCOPE]
    return tune_document_rule(
        *anchors,
        len(classes),
        documents=stand_ins,
        out_of_scope=vectors[outside],
        wrong_target=policy.wrong_target,
        oos_share=policy.oos_share,
        model_phrasings=model_phrasings,
    )


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
