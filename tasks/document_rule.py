"""The document rule of the L2 router: serve a document entry only near one of its phrasings.

An entry compiled from a document section has no phrasings written by users: the offline
provider derives them from the heading, so a regression trained on them separates the entries
perfectly and its held-out paraphrases are answered at any threshold. Those verdicts cannot say
how real questions fare. A document entry is therefore served by similarity alone: the
question's vector must be within :attr:`DocumentRule.threshold` of the entry's nearest phrasing
(an *anchor*), and ahead of every other entry's nearest phrasing by :attr:`DocumentRule.margin`.

Both are tuned on stand-ins that are harder than real questions, so the rule and its risk
estimate err on the safe side:

* **positives**: each section's own text, asked as if it were the question (an answer shares
  less wording with its heading than a user's rephrasing does), must come nearest to its entry;
* **negatives**: each entry's heading asked of the *other* entries (the entry left out: a
  question about a section the knowledge does not hold, in the knowledge's own style), and the
  known out-of-scope questions.

The rule kept answers the most positives rightly while the expected wrong-answer rate, at the
policy's out-of-scope share, stays within its target; on a tie, the one with the lower
expected rate, then the stricter one.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import numpy.typing as npt

from schemas.router import best_per_class, expected_wrong_rate

__all__ = ["ANCHOR_GRID", "MARGIN_GRID", "DocumentRule", "nearest_two", "tune_document_rule"]

Matrix = npt.NDArray[np.float32]
Labels = npt.NDArray[np.int64]

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
    queries: Matrix, anchors: Matrix, labels: Labels, classes: int, *, exclude: Labels | None = None
) -> tuple[Labels, Matrix, Matrix]:
    """For each query row: the class of its nearest anchor, that similarity and the best
    similarity of any other class (-1 where there is none); with ``exclude``, each row's own
    class (``exclude[i]``) is left out, as if the knowledge lacked it."""
    best = best_per_class(queries @ anchors.T, labels, classes)
    if exclude is not None:
        best[np.arange(len(queries)), exclude] = -np.inf
    order = np.argsort(-best, axis=1)
    rows = np.arange(len(queries))
    top = best[rows, order[:, 0]]
    second = best[rows, order[:, 1]] if classes > 1 else np.full(len(queries), -np.inf)
    top = np.where(np.isfinite(top), top, -1.0).astype(np.float32)
    second = np.where(np.isfinite(second), second, -1.0).astype(np.float32)
    return order[:, 0].astype(np.int64), top, second


def _served(top: Matrix, second: Matrix) -> npt.NDArray[np.float64]:
    """How many rows each rule ``[threshold, margin]`` of the grids serves."""
    over = top[:, None, None] >= ANCHOR_GRID[None, :, None]
    ahead = (top - second)[:, None, None] >= MARGIN_GRID[None, None, :]
    counted: npt.NDArray[np.float64] = (over & ahead).sum(axis=0).astype(np.float64)
    return counted


def tune_document_rule(
    anchors: Matrix,
    labels: Labels,
    classes: int,
    *,
    documents: Sequence[tuple[int, Matrix, Matrix]],
    out_of_scope: Matrix,
    wrong_target: float,
    oos_share: float,
) -> DocumentRule:
    """Tune the rule for the document classes whose anchors are ``anchors`` (rows, labelled by
    class index), given per document class ``(index, heading vector, section-text vector)``
    and the known out-of-scope questions' vectors."""
    index = np.array([d[0] for d in documents], dtype=np.int64)
    headings = np.stack([d[1] for d in documents]).astype(np.float32)
    texts = np.stack([d[2] for d in documents]).astype(np.float32)
    found, top, second = nearest_two(texts, anchors, labels, classes)
    right = found == index
    _, left_top, left_second = nearest_two(headings, anchors, labels, classes, exclude=index)
    negatives_top = left_top
    negatives_second = left_second
    if len(out_of_scope):
        _, oos_top, oos_second = nearest_two(out_of_scope, anchors, labels, classes)
        negatives_top = np.concatenate([left_top, oos_top])
        negatives_second = np.concatenate([left_second, oos_second])
    n = len(documents)
    correct = _served(top[right], second[right]) / n
    misrouted = _served(top[~right], second[~right]) / n
    leaked = _served(negatives_top, negatives_second) / max(len(negatives_top), 1)
    wrong = expected_wrong_rate(correct, misrouted, leaked, oos_share)
    feasible = wrong <= wrong_target
    sizes = {"document_size": float(n), "document_negatives": float(len(negatives_top))}
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
