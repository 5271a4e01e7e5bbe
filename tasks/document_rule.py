"""The document rule of the L2 router: serve a document entry only near one of its phrasings.

An entry compiled from a document section has no phrasings written by users: the offline
provider derives them from the heading, so a regression trained on them separates the entries
perfectly and its held-out paraphrases are answered at any threshold. Those verdicts cannot say
how real questions fare. A document entry is therefore served by similarity alone: the
question's vector must be within :attr:`DocumentRule.threshold` of the entry's nearest phrasing
(an *anchor*), and ahead of every other entry's nearest phrasing by :attr:`DocumentRule.margin`.

Both are tuned on stand-ins for real questions:

* **positives**, which must come nearest to their own entry: where a language model wrote the
  phrasings (``model_phrasings``), each phrasing asked with itself left out of the anchors, so
  it must find its entry through the others, as a user's rephrasing would; otherwise, and for
  an entry left with one phrasing, two stand-ins that bracket a user's question: the section's
  own text asked as if it were the question (harder than a user's question: an answer shares
  less wording with its heading than a rephrasing does, and where pages overlap it lands
  nearest another page's heading) and the heading followed by the text (easier: it holds the
  heading's words), half an entry's weight each. Offline phrasings are templates of the
  heading, which find each other at any threshold, so they are never positives;
* **negatives**: each entry's phrasings (only its heading when they are templates) asked of
  the *other* entries (the entry left out: a question about a section the knowledge does not
  hold, in the knowledge's own style), and the known out-of-scope questions.

Each entry weighs the same among the positives and among the left-out negatives, however many
phrasings it has. The rule kept answers the most positives rightly while the expected
wrong-answer rate, at the policy's out-of-scope share, stays within its target; on a tie, the
one with the lower expected rate, then the stricter one.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import NamedTuple

import numpy as np
import numpy.typing as npt

from schemas.arrays import Floats
from schemas.policies import RouterPolicy
from schemas.risk import expected_wrong_rate
from schemas.router import OUT_OF_SCOPE, best_per_class
from tasks.held_out import Held

__all__ = [
    "ANCHOR_GRID",
    "MARGIN_GRID",
    "Anchors",
    "DocumentRule",
    "bracketed",
    "curated_only",
    "document_anchors",
    "nearest_two",
    "tune_document_rule",
    "tune_documents",
]

Labels = npt.NDArray[np.int64]
Rates = npt.NDArray[np.float64]

ANCHOR_GRID = np.round(np.arange(0.20, 0.955, 0.01), 2).astype(np.float32)
"""Minimum similarities to a document entry's nearest phrasing that tuning tries."""
MARGIN_GRID = np.round(np.arange(0.0, 0.3025, 0.005), 3).astype(np.float32)
"""Minimum gaps to the next entry's similarity that tuning tries."""


class DocumentRule(NamedTuple):
    """A tuned document rule and the stand-in figures it was tuned to."""

    threshold: float
    margin: float
    metrics: dict[str, float]


def nearest_two(
    queries: Floats,
    anchors: Floats,
    labels: Labels,
    classes: int,
    *,
    exclude: Labels | None = None,
    exclude_anchor: Labels | None = None,
) -> tuple[Labels, Floats, Floats]:
    """For each query row: the class of its nearest anchor, that similarity and the best
    similarity of any other class (-1 where there is none); with ``exclude``, each row's own
    class (``exclude[i]``) is left out, as if the knowledge lacked it; with ``exclude_anchor``,
    each row's own anchor row (``exclude_anchor[i]``), as if that phrasing were never written."""
    scores = queries @ anchors.T
    if exclude_anchor is not None:
        rows = np.flatnonzero(exclude_anchor >= 0)  # -1: no anchor of its own to leave out
        scores[rows, exclude_anchor[rows]] = -np.inf
    best = best_per_class(scores, labels, classes)
    if exclude is not None:
        best[np.arange(len(queries)), exclude] = -np.inf
    order = np.argsort(-best, axis=1)
    rows = np.arange(len(queries))
    top = best[rows, order[:, 0]]
    second = best[rows, order[:, 1]] if classes > 1 else np.full(len(queries), -np.inf)
    top = np.where(np.isfinite(top), top, -1.0).astype(np.float32)
    second = np.where(np.isfinite(second), second, -1.0).astype(np.float32)
    return order[:, 0].astype(np.int64), top, second


def _served(top: Floats, second: Floats, weights: npt.NDArray[np.float64]) -> Rates:
    """The weight of the rows each rule ``[threshold, margin]`` of the grids serves."""
    over = top[:, None, None] >= ANCHOR_GRID[None, :, None]
    ahead = (top - second)[:, None, None] >= MARGIN_GRID[None, None, :]
    counted: Rates = np.einsum("rtm,r->tm", (over & ahead).astype(np.float64), weights)
    return counted


class _StandIns(NamedTuple):
    """Query rows, the class each should find (or leave), the anchor each must not use (-1:
    none), and each row's weight (an entry's rows sum to one)."""

    vectors: Floats
    truth: Labels
    own_anchor: Labels
    weights: npt.NDArray[np.float64]


def _positives(
    anchors: Floats,
    labels: Labels,
    documents: Sequence[tuple[int, Floats, Floats]],
    *,
    model_phrasings: bool,
) -> _StandIns:
    vectors: list[Floats] = []
    truth: list[int] = []
    own: list[int] = []
    weights: list[float] = []
    for index, _, texts in documents:
        rows = np.flatnonzero(labels == index) if model_phrasings else np.array([], np.int64)
        if len(rows) >= 2:
            vectors.extend(anchors[rows])
            truth.extend([index] * len(rows))
            own.extend(int(r) for r in rows)
            weights.extend([1.0 / len(rows)] * len(rows))
        else:
            stand_ins = np.atleast_2d(texts)
            vectors.extend(stand_ins)
            truth.extend([index] * len(stand_ins))
            own.extend([-1] * len(stand_ins))
            weights.extend([1.0 / len(stand_ins)] * len(stand_ins))
    return _StandIns(
        np.stack(vectors).astype(np.float32),
        np.array(truth, np.int64),
        np.array(own, np.int64),
        np.array(weights, np.float64),
    )


def tune_document_rule(
    anchors: Floats,
    labels: Labels,
    classes: int,
    *,
    documents: Sequence[tuple[int, Floats, Floats]],
    out_of_scope: Floats,
    wrong_target: float,
    oos_share: float,
    model_phrasings: bool = False,
) -> DocumentRule:
    """Tune the rule for the document classes whose anchors are ``anchors`` (rows, labelled by
    class index), given per document class ``(index, heading vector, stand-in vectors)`` (one
    row, or a ``(k, dim)`` block of rows that share the entry's weight) and the known
    out-of-scope questions' vectors; ``model_phrasings``: the anchors other than
    the headings were written by a language model, so they stand in for real questions."""
    positives = _positives(anchors, labels, documents, model_phrasings=model_phrasings)
    found, top, second = nearest_two(
        positives.vectors, anchors, labels, classes, exclude_anchor=positives.own_anchor
    )
    right = found == positives.truth
    if model_phrasings:
        per_class = np.bincount(labels, minlength=classes).astype(np.float64)
        left_out = _StandIns(anchors, labels, np.full(len(labels), -1), 1.0 / per_class[labels])
    else:
        headings = np.stack([d[1] for d in documents]).astype(np.float32)
        index = np.array([d[0] for d in documents], dtype=np.int64)
        left_out = _StandIns(headings, index, np.full(len(index), -1), np.ones(len(index)))
    _, negatives_top, negatives_second = nearest_two(
        left_out.vectors, anchors, labels, classes, exclude=left_out.truth
    )
    negative_weights = left_out.weights
    if len(out_of_scope):
        _, oos_top, oos_second = nearest_two(out_of_scope, anchors, labels, classes)
        negatives_top = np.concatenate([negatives_top, oos_top])
        negatives_second = np.concatenate([negatives_second, oos_second])
        negative_weights = np.concatenate([negative_weights, np.ones(len(oos_top))])
    n = float(positives.weights.sum())
    w = positives.weights
    correct = _served(top[right], second[right], w[right]) / n
    misrouted = _served(top[~right], second[~right], w[~right]) / n
    leaked = _served(negatives_top, negatives_second, negative_weights) / max(
        float(negative_weights.sum()), 1.0
    )
    wrong = expected_wrong_rate(correct, misrouted, leaked, oos_share)
    feasible = wrong <= wrong_target
    sizes = {
        "document_size": float(len(documents)),
        "document_positives": float(len(positives.truth)),
        "document_negatives": float(len(negatives_top)),
        "document_model_phrasings": float(model_phrasings),
    }
    if not feasible.any():
        strict = {**sizes, "document_coverage": 0.0, "document_wrong_rate": 0.0}
        return DocumentRule(
            round(float(ANCHOR_GRID[-1]), 3), round(float(MARGIN_GRID[-1]), 3), strict
        )
    # Most positives answered rightly, then the lower expected rate, then the stricter rule.
    t_index = np.arange(len(ANCHOR_GRID))[:, None] + np.zeros((1, len(MARGIN_GRID)))
    m_index = np.zeros((len(ANCHOR_GRID), 1)) + np.arange(len(MARGIN_GRID))[None, :]
    keys = np.lexsort(
        (
            -(m_index[feasible] + t_index[feasible]),
            wrong[feasible],
            -correct[feasible],
        )
    )
    t, m = (int(v) for v in np.argwhere(feasible)[keys[0]])
    return DocumentRule(
        round(float(ANCHOR_GRID[t]), 3),
        round(float(MARGIN_GRID[m]), 3),
        {
            **sizes,
            "document_coverage": round(float(correct[t, m]), 4),
            "document_misrouted": round(float(misrouted[t, m]), 4),
            "document_negatives_served": round(float(leaked[t, m]), 4),
            "document_wrong_rate": round(float(wrong[t, m]), 4),
        },
    )


def curated_only(held: Sequence[Held], documents: Mapping[str, str]) -> list[Held]:
    """Held-out verdicts as the probabilities' rule sees them when ``documents`` are decided by
    the document rule: their own phrasings are not its to answer, and a question whose best
    class is one of them is not served by it."""
    return [
        h._replace(predicted=OUT_OF_SCOPE) if h.predicted in documents else h
        for h in held
        if not (h.kind == "in" and h.truth in documents)
    ]


Anchors = tuple[Floats, npt.NDArray[np.int64]] | None


def document_anchors(
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


def bracketed(heading: str, text: str) -> str:
    """The easier of a section's two stand-in questions: its heading, then its text."""
    return f"{heading}\n{text}"


def tune_documents(
    everything: Sequence[tuple[str, str]],
    vectors: Floats,
    anchors: tuple[Floats, npt.NDArray[np.int64]],
    documents: Mapping[str, str],
    encoder: Callable[[Sequence[str]], Floats],
    policy: RouterPolicy,
    *,
    model_phrasings: bool,
) -> DocumentRule:
    """The document rule tuned on held-out model phrasings or each section's two stand-ins,
    and on left-out entries (see :mod:`tasks.document_rule`)."""
    classes = sorted({c for _, c in everything})
    first: dict[str, int] = {}
    for i, (_, c) in enumerate(everything):
        first.setdefault(c, i)
    names = sorted(documents)
    headings = [everything[first[c]][0] for c in names]
    texts = encoder(
        [documents[c] for c in names]
        + [bracketed(h, documents[c]) for h, c in zip(headings, names, strict=True)]
    )
    n = len(names)
    stand_ins = [
        (classes.index(c), vectors[first[c]], texts[[k, n + k]]) for k, c in enumerate(names)
    ]
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
