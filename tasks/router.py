"""Train the L2 router at compile time (scikit-learn), export it as plain arrays.

Examples are every approved entry's canonical question and paraphrases; known out-of-scope
questions become an explicit out-of-scope class. One multinomial logistic regression reads two
feature blocks: hashed word/character n-grams (TF-IDF) and, when an encoder is given, the
question's sentence vector. The decision threshold is tuned on held-out paraphrases and
out-of-scope examples: the lowest threshold whose held-out wrong-answer rate stays under the
target, so the router answers as much as it can without being wrong.
"""

from __future__ import annotations

import math
import warnings
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Final

import msgspec
import numpy as np
import numpy.typing as npt
from scipy import sparse
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression

from schemas.keys import content_hash
from schemas.router import OUT_OF_SCOPE, RouterHeader, RouterModel, hashed_features

__all__ = [
    "REUSE_OVERLAP",
    "WRONG_TARGET",
    "Encoder",
    "Tuning",
    "example_digests",
    "fit_router",
    "train_router",
]

WRONG_TARGET: Final = 0.02
DEFAULT_THRESHOLD: Final = 0.5
C: Final = 20.0
PROBE_ITERATIONS: Final = 100
_HOLDOUT_EVERY: Final = 5
_FOLDS: Final = 2
REUSE_OVERLAP: Final = 0.95
_LARGE: Final = 4000
_GRID: Final = tuple(round(0.05 * i, 2) for i in range(1, 20))

Matrix = npt.NDArray[np.float32]
Encoder = Callable[[Sequence[str]], Matrix]
"""Questions to unit sentence vectors (rows), e.g. a cached MiniLM embedder."""


def _ngram_block(
    questions: Sequence[str],
) -> tuple[sparse.csr_matrix, npt.NDArray[np.int64], Matrix]:
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


def fit_router(
    examples: Sequence[tuple[str, str]],
    *,
    vectors: Matrix | None = None,
    embedder: str | None = None,
    threshold: float = DEFAULT_THRESHOLD,
    max_iter: int = 300,
    start: RouterModel | None = None,
) -> RouterModel:
    """Fit a linear router on ``(question, class)`` pairs (and their sentence vectors).

    The fit stops after ``max_iter`` L-BFGS iterations even if not fully converged: the
    threshold is tuned on held-out predictions of such fits, so what matters is that the
    tuning and the final model are fitted alike, not the last digits of the optimum. With
    ``start`` (a router over the same classes, e.g. the last compile's), the fit begins from its
    weights, so a training set that changed a little converges in a few iterations.
    """
    ngrams, buckets, idf = _ngram_block([q for q, _ in examples])
    features = (
        ngrams if vectors is None else sparse.hstack([ngrams, sparse.csr_matrix(vectors)]).tocsr()
    )
    classes = sorted({c for _, c in examples})
    labels = np.array([classes.index(c) for _, c in examples])
    width = features.shape[1]
    if len(classes) == 1:
        coef = np.zeros((1, width), dtype=np.float32)
        intercept = np.zeros(1, dtype=np.float32)
    else:
        initial = _initial_weights(start, classes, buckets, width) if start else None
        model = LogisticRegression(C=C, max_iter=max_iter, warm_start=initial is not None)
        if initial is not None:
            model.coef_, model.intercept_ = initial
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            model.fit(features, labels)
        coef = np.asarray(model.coef_, dtype=np.float32)
        intercept = np.asarray(model.intercept_, dtype=np.float32)
        if len(classes) == 2:  # binary models keep one row: expand to a two-class softmax
            coef = np.vstack([-coef / 2, coef / 2])
            intercept = np.array([-intercept[0] / 2, intercept[0] / 2], dtype=np.float32)
    weights = coef.T.copy()
    dim = 0 if vectors is None else vectors.shape[1]
    header = RouterHeader(
        classes=tuple(classes),
        threshold=threshold,
        trained_on=len(examples),
        embedder=embedder if vectors is not None else None,
        embedding_dim=dim,
    )
    return RouterModel(
        header,
        buckets,
        idf,
        np.ascontiguousarray(weights[: len(buckets)]),
        intercept,
        np.ascontiguousarray(weights[len(buckets) :]) if dim else None,
    )


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


def _initial_weights(
    start: RouterModel, classes: Sequence[str], buckets: npt.NDArray[np.int64], width: int
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]] | None:
    """``start``'s weights laid out for a new feature space (``None`` when they cannot be)."""
    dim = width - len(buckets)
    if tuple(classes) != start.header.classes or len(classes) < 3:
        return None
    if dim != start.header.embedding_dim or len(start.buckets) == 0:
        return None
    coef = np.zeros((len(classes), width), dtype=np.float64)
    positions = np.clip(np.searchsorted(start.buckets, buckets), 0, len(start.buckets) - 1)
    known = start.buckets[positions] == buckets
    coef[:, : len(buckets)][:, known] = start.weights[positions[known]].T
    if dim and start.embedding_weights is not None:
        coef[:, len(buckets) :] = start.embedding_weights.T
    return coef, start.bias.astype(np.float64)


def _tune(
    classes: Sequence[str],
    probabilities: Sequence[npt.NDArray[np.float32]],
    held: Sequence[tuple[str, str]],
) -> tuple[float, dict[str, float]]:
    """The lowest threshold keeping the held-out wrong-answer rate under the target."""
    scored = []
    for probs, (_, truth) in zip(probabilities, held, strict=True):
        best = int(np.argmax(probs))
        scored.append((classes[best], float(probs[best]), truth))
    in_scope = sum(truth != OUT_OF_SCOPE for _, _, truth in scored) or 1
    for t in _GRID:
        served = [(p, truth) for p, c, truth in scored if c >= t and p != OUT_OF_SCOPE]
        wrong = sum(p != truth for p, truth in served)
        rate = wrong / len(served) if served else 0.0
        if rate <= WRONG_TARGET:
            return t, {
                "heldout_coverage": round((len(served) - wrong) / in_scope, 4),
                "heldout_wrong_rate": round(rate, 4),
                "heldout_size": float(len(scored)),
            }
    return _GRID[-1], {"heldout_size": float(len(scored))}


class Tuning(msgspec.Struct, frozen=True, kw_only=True):
    """A tuned threshold and the training examples it was tuned on (as digests)."""

    digests: tuple[str, ...]
    threshold: float
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
    embedder: str | None = None,
    previous: Tuning | None = None,
    start: RouterModel | None = None,
) -> RouterModel:
    """Tune the threshold on held-out examples, then fit on everything.

    A threshold tuned on a training set that shares at least :data:`REUSE_OVERLAP` of its
    examples with this one (``previous``, e.g. the last compile's) is reused: one changed
    document hardly moves it, and a partial recompile then fits the router only once — from
    ``start``'s weights when given.
    """
    everything = list(dict.fromkeys(examples))
    everything += [(q, OUT_OF_SCOPE) for q in dict.fromkeys(out_of_scope)]
    vectors = encoder([q for q, _ in everything]) if encoder is not None else None
    digests = example_digests(examples, out_of_scope)
    if previous is not None and (shared := overlap(previous.digests, digests)) >= REUSE_OVERLAP:
        model = fit_router(
            everything,
            vectors=vectors,
            embedder=embedder,
            threshold=previous.threshold,
            start=start,
        )
        metrics = {**previous.metrics, "threshold_reused_overlap": round(shared, 4)}
        header = msgspec.structs.replace(model.header, metrics=metrics)
        return RouterModel(
            header, model.buckets, model.idf, model.weights, model.bias, model.embedding_weights
        )
    folds = _folds(everything)
    threshold: float = DEFAULT_THRESHOLD
    metrics = {}
    held: list[tuple[str, str]] = []
    probabilities: list[npt.NDArray[np.float32]] = []
    classes = sorted({c for _, c in everything})
    for fold in sorted(set(folds) - {-1}):
        train = [i for i, f in enumerate(folds) if f != fold]
        test = [i for i, f in enumerate(folds) if f == fold]
        train_examples = [everything[i] for i in train]
        if len({c for _, c in train_examples}) < 2:
            continue
        probe = fit_router(
            train_examples,
            vectors=None if vectors is None else vectors[train],
            embedder=embedder,
            max_iter=PROBE_ITERATIONS,
        )
        for i in test:
            probs = probe.probabilities(everything[i][0], None if vectors is None else vectors[i])
            # Re-index to the full class list (a fold may miss a class).
            full = np.zeros(len(classes), dtype=np.float32)
            for k, c in enumerate(probe.header.classes):
                full[classes.index(c)] = probs[k]
            probabilities.append(full)
            held.append(everything[i])
    if held:
        threshold, metrics = _tune(classes, probabilities, held)
    model = fit_router(everything, vectors=vectors, embedder=embedder, threshold=threshold)
    header = msgspec.structs.replace(model.header, metrics=metrics)
    return RouterModel(
        header, model.buckets, model.idf, model.weights, model.bias, model.embedding_weights
    )
