"""Held-out judgements: how tuning sees a router on questions it was not trained on.

Each example gets a fold (:func:`folds_of`); a model fitted without a fold judges that fold's
questions and every question of the classes :func:`left_out` leaves out of training (stand-ins
for intents the knowledge lacks). :func:`tune_rule` then picks the decision rule that answers
the most held-out questions rightly within the policy's wrong-answer target.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Final, NamedTuple

import numpy as np
import numpy.typing as npt

from schemas.arrays import Floats
from schemas.keys import content_hash
from schemas.policies import RouterPolicy
from schemas.risk import expected_wrong_rate
from schemas.router import OUT_OF_SCOPE, RouterModel

__all__ = [
    "GRID",
    "NOVEL_SHARE",
    "SIMILARITY_GRID",
    "FitJudge",
    "FitJudgeVariants",
    "Held",
    "Judge",
    "JudgeVariants",
    "Judgement",
    "Thresholds",
    "folds_of",
    "held_out_variants",
    "held_out_verdicts",
    "judge",
    "judge_variants",
    "left_out",
    "tune_rule",
]

_HOLDOUT_EVERY: Final = 5
_FOLDS: Final = 2
_LARGE: Final = 4000
GRID: Final = tuple(round(0.01 * i, 2) for i in range(5, 100))
SIMILARITY_GRID: Final = (None, *(round(0.02 * i, 2) for i in range(10, 46)))

"""Minimum centroid similarities tuning tries (``None``: no similarity gate)."""
NOVEL_SHARE: Final = 0.15
"""Share of in-scope classes that tuning trains without, to see how intents the knowledge
lacks are treated (only with at least :data:`_MIN_CLASSES_TO_LEAVE_OUT` classes)."""
_MIN_CLASSES_TO_LEAVE_OUT: Final = 5


def folds_of(examples: Sequence[tuple[str, str]]) -> list[int]:
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
    grid = np.asarray(GRID, dtype=np.float32)
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
        return Thresholds(GRID[-1], GRID[-1], sizes)
    covered, wrong_rate, leak, astray, t, a, gate = best
    return Thresholds(
        GRID[t],
        GRID[a],
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


def left_out(classes: Sequence[str], fold: int, folds: int) -> set[str]:
    """The in-scope classes a tuning fold trains without (:data:`NOVEL_SHARE` of them overall,
    spread over the folds), so their questions test how the router treats intents it lacks."""
    inside = [c for c in classes if c != OUT_OF_SCOPE]
    if len(inside) < _MIN_CLASSES_TO_LEAVE_OUT:
        return set()
    ranked = sorted(inside, key=lambda c: content_hash(f"novel\x1f{c}", 8))
    chosen = ranked[: max(1, round(NOVEL_SHARE * len(inside)))]
    return {c for i, c in enumerate(chosen) if i % folds == fold}


Judgement = tuple[str, float, bool, float]
"""A verdict: best class, its probability, whether both heads ranked it first, and the
question's similarity to its centroid (1.0 without vectors)."""
Judge = Callable[[str, Floats | None], Judgement]
"""A fitted probe's verdict on one question."""
JudgeVariants = Callable[[str, Floats | None], Sequence[Judgement]]
"""A fitted probe's verdicts on one question, one per variant of its decision (e.g. per weight
of the n-gram head)."""
FitJudge = Callable[[Sequence[tuple[str, str]], Floats | None], Judge]
"""Fits a router-like model on ``(question, class)`` pairs (and their vectors)."""
FitJudgeVariants = Callable[[Sequence[tuple[str, str]], Floats | None], JudgeVariants]


def judge(model: RouterModel, question: str, vector: npt.NDArray[np.float32] | None) -> Judgement:
    """``model``'s best class for ``question``, its probability, whether both heads ranked
    it first, and the question's similarity to that class's centroid."""
    return judge_variants(model, question, vector, (model.header.words_weight,))[0]


def judge_variants(
    model: RouterModel,
    question: str,
    vector: npt.NDArray[np.float32] | None,
    weights: Sequence[float],
) -> list[Judgement]:
    """:func:`judge` with the n-gram head weighted by each of ``weights`` in turn (the
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
    everything: Sequence[tuple[str, str]], vectors: Floats | None, probe: FitJudge
) -> list[Held]:
    """JudgeVariants on held-out questions of models fitted by ``probe`` without them: the held-out
    folds of :func:`folds_of` and, in each fold, every question of the classes :func:`left_out`
    leaves out of training."""

    def variants(train: Sequence[tuple[str, str]], train_vectors: Floats | None) -> JudgeVariants:
        verdict = probe(train, train_vectors)
        return lambda question, vector: (verdict(question, vector),)

    return held_out_variants(everything, vectors, variants, 1)[0]


def held_out_variants(
    everything: Sequence[tuple[str, str]],
    vectors: Floats | None,
    probe: FitJudgeVariants,
    count: int,
) -> list[list[Held]]:
    """:func:`held_out_verdicts` for a probe whose verdicts come in ``count`` variants: one
    list of held-out verdicts per variant."""
    folds = folds_of(everything)
    held: list[list[Held]] = [[] for _ in range(count)]
    fold_ids = sorted(set(folds) - {-1})
    classes = sorted({c for _, c in everything})
    for fold in fold_ids:
        novel = left_out(classes, fold, len(fold_ids))
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
