"""The wrong-answer rate a router is tuned to: served answers that are wrong, with a share of the
traffic out of scope."""

from __future__ import annotations

from typing import TypeVar

import numpy as np
import numpy.typing as npt

__all__ = ["estimated_wrong_rate", "expected_wrong_rate"]

Rate = TypeVar("Rate", float, npt.NDArray[np.float64])


def expected_wrong_rate(correct: Rate, misrouted: Rate, leaked: Rate, oos_share: float) -> Rate:
    """The share of served answers that are wrong, when ``oos_share`` of the questions are out
    of scope, from the shares of in-scope questions served rightly (``correct``) and wrongly
    (``misrouted``) and of out-of-scope ones served (``leaked``); 0 where nothing is served."""
    answered = (1 - oos_share) * (correct + misrouted) + oos_share * leaked
    risky = (1 - oos_share) * misrouted + oos_share * leaked
    if isinstance(answered, float):
        return risky / answered if answered > 0 else 0.0
    return np.divide(risky, answered, out=np.zeros_like(risky), where=answered > 0)


def estimated_wrong_rate(
    metrics: dict[str, float], oos_share: float, *, document_share: float = 0.0
) -> float | None:
    """A router's expected wrong-answer rate at ``oos_share`` of out-of-scope traffic, from the
    held-out figures its rules were tuned to (``None`` where they were not recorded), the
    curated rule's and the document rule's mixed by ``document_share`` (the share of classes
    the document rule decides)."""
    parts: list[tuple[float, float, float, float]] = []
    for prefix, weight in (("heldout", 1.0 - document_share), ("document", document_share)):
        if weight <= 0:
            continue
        if f"{prefix}_coverage" not in metrics or f"{prefix}_misrouted" not in metrics:
            return None
        parts.append(
            (
                weight,
                metrics[f"{prefix}_coverage"],
                metrics[f"{prefix}_misrouted"],
                metrics.get(f"{prefix}_negatives_served", 0.0),
            )
        )
    if not parts:
        return None
    correct = sum(w * c for w, c, _, _ in parts)
    misrouted = sum(w * m for w, _, m, _ in parts)
    leaked = sum(w * n for w, _, _, n in parts)
    return round(float(expected_wrong_rate(correct, misrouted, leaked, oos_share)), 4)
