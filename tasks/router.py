"""Train the L2 router at compile time (scikit-learn), export it as plain arrays.

Examples are every approved entry's canonical question and paraphrases; known out-of-scope
questions become an explicit out-of-scope class. The decision threshold is tuned on held-out
paraphrases (and held-out out-of-scope examples): the lowest threshold whose wrong-answer rate
on them stays under the target, so the router answers as much as it can without being wrong.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Sequence
from typing import Final

import numpy as np
from scipy import sparse
from sklearn.linear_model import LogisticRegression

from schemas.keys import content_hash
from schemas.router import OUT_OF_SCOPE, RouterHeader, RouterModel, hashed_features

__all__ = ["WRONG_TARGET", "fit_router", "train_router"]

WRONG_TARGET: Final = 0.02
DEFAULT_THRESHOLD: Final = 0.5
_HOLDOUT_EVERY: Final = 5
_GRID: Final = tuple(round(0.05 * i, 2) for i in range(1, 20))


def fit_router(
    examples: Sequence[tuple[str, str]], *, threshold: float = DEFAULT_THRESHOLD
) -> RouterModel:
    """Fit a linear router on ``(question, class)`` pairs."""
    features = [hashed_features(q) for q, _ in examples]
    df: Counter[int] = Counter(b for f in features for b in f)
    buckets = np.array(sorted(df), dtype=np.int64)
    position = {int(b): i for i, b in enumerate(buckets)}
    n = len(examples)
    idf = np.array([math.log((1 + n) / (1 + df[int(b)])) + 1.0 for b in buckets], dtype=np.float32)
    rows, cols, vals = [], [], []
    for r, f in enumerate(features):
        weighted = {position[b]: v * idf[position[b]] for b, v in f.items()}
        norm = math.sqrt(sum(v * v for v in weighted.values())) or 1.0
        for c, v in weighted.items():
            rows.append(r)
            cols.append(c)
            vals.append(v / norm)
    matrix = sparse.csr_matrix((vals, (rows, cols)), shape=(n, len(buckets)), dtype=np.float32)
    classes = sorted({c for _, c in examples})
    labels = np.array([classes.index(c) for _, c in examples])
    if len(classes) == 1:
        weights = np.zeros((len(buckets), 1), dtype=np.float32)
        bias = np.zeros(1, dtype=np.float32)
    else:
        model = LogisticRegression(C=20.0, max_iter=300, tol=1e-3)
        model.fit(matrix, labels)
        coef = np.asarray(model.coef_, dtype=np.float32)
        intercept = np.asarray(model.intercept_, dtype=np.float32)
        if len(classes) == 2:  # binary models keep one row: expand to a two-class softmax
            coef = np.vstack([-coef / 2, coef / 2])
            intercept = np.array([-intercept[0] / 2, intercept[0] / 2], dtype=np.float32)
        weights = coef.T.copy()
        bias = intercept
    header = RouterHeader(classes=tuple(classes), threshold=threshold, trained_on=n)
    return RouterModel(header, buckets, idf, weights, bias)


def _tune(model: RouterModel, held: Sequence[tuple[str, str]]) -> tuple[float, dict[str, float]]:
    """The lowest threshold keeping the held-out wrong-answer rate under the target."""
    scored = []
    for question, truth in held:
        probs = model.probabilities(question)
        best = int(np.argmax(probs))
        scored.append((model.header.classes[best], float(probs[best]), truth))
    best_t: float = _GRID[-1]
    best_metrics: dict[str, float] = {}
    for t in _GRID:
        served = [(p, truth) for p, c, truth in scored if c >= t and p != OUT_OF_SCOPE]
        wrong = sum(p != truth for p, truth in served)
        in_scope = sum(truth != OUT_OF_SCOPE for _, _, truth in scored) or 1
        rate = wrong / len(served) if served else 0.0
        if rate <= WRONG_TARGET:
            best_t = t
            best_metrics = {
                "heldout_coverage": round((len(served) - wrong) / in_scope, 4),
                "heldout_wrong_rate": round(rate, 4),
                "heldout_size": float(len(scored)),
            }
            break
    return best_t, best_metrics


def train_router(examples: Sequence[tuple[str, str]], out_of_scope: Sequence[str]) -> RouterModel:
    """Tune the threshold on held-out examples, then fit on everything."""
    everything = list(dict.fromkeys(examples))
    everything += [(q, OUT_OF_SCOPE) for q in dict.fromkeys(out_of_scope)]
    per_class: defaultdict[str, list[tuple[str, str]]] = defaultdict(list)
    for example in everything:
        per_class[example[1]].append(example)
    train: list[tuple[str, str]] = []
    held: list[tuple[str, str]] = []
    for items in per_class.values():
        for i, example in enumerate(items):
            # Keep the first (canonical) phrasing in training; hold out every fifth of the rest.
            is_held = (
                i > 0
                and len(items) >= 3
                and int(content_hash(example[0], 8), 16) % _HOLDOUT_EVERY == 0
            )
            (held if is_held else train).append(example)
    threshold: float = DEFAULT_THRESHOLD
    metrics: dict[str, float] = {}
    if held and len({c for _, c in train}) > 1:
        threshold, metrics = _tune(fit_router(train), held)
    model = fit_router(everything, threshold=threshold)
    header = RouterHeader(
        classes=model.header.classes,
        threshold=threshold,
        trained_on=len(everything),
        metrics=metrics,
    )
    return RouterModel(header, model.buckets, model.idf, model.weights, model.bias)
