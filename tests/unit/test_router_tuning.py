"""How the router's thresholds are tuned: held-out risk, left-out classes, the agreement rule."""

from __future__ import annotations

import numpy as np
import pytest

from schemas.policies import OOS_PRIOR, WRONG_TARGET, RouterPolicy
from schemas.router import OUT_OF_SCOPE
from tasks.held_out import GRID, NOVEL_SHARE, Held, Thresholds, left_out, tune_rule
from tasks.router import _preference


def _inside(n: int, confidence: float, *, right: bool = True, agreed: bool = False) -> list[Held]:
    return [Held("in", "a" if right else "b", confidence, agreed, "a") for _ in range(n)]


def _negatives(n: int, confidence: float, *, agreed: bool = False) -> list[Held]:
    return [Held("negative", "a", confidence, agreed, "z") for _ in range(n)]


def test_the_threshold_sits_above_confident_negatives() -> None:
    # Right answers at 0.9 and 0.6; out-of-scope questions leak at 0.7.
    held = [*_inside(50, 0.9), *_inside(50, 0.6), *_negatives(100, 0.7)]
    rule = tune_rule(held)
    assert 0.7 < rule.threshold <= 0.9
    assert rule.metrics["heldout_coverage"] == pytest.approx(0.5)
    assert rule.metrics["heldout_wrong_rate"] == 0.0
    assert rule.metrics["heldout_negatives"] == 100


def test_negatives_count_at_the_assumed_out_of_scope_share() -> None:
    # 1 % of negatives served at 0.5: expected wrong rate is prior * 1 % / answered, under target.
    held = [*_inside(100, 0.5), *_negatives(99, 0.1), *_negatives(1, 0.5)]
    rule = tune_rule(held)
    expected_wrong = OOS_PRIOR * 0.01 / ((1 - OOS_PRIOR) + OOS_PRIOR * 0.01)
    assert expected_wrong <= WRONG_TARGET
    assert rule.threshold <= 0.5
    assert rule.metrics["heldout_wrong_rate"] == pytest.approx(expected_wrong, abs=1e-4)


def test_misroutes_alone_decide_without_negatives() -> None:
    held = [*_inside(90, 0.8), *_inside(10, 0.4, right=False)]
    rule = tune_rule(held)
    assert 0.4 < rule.threshold <= 0.8
    assert "heldout_negatives_served" in rule.metrics


def test_agreement_earns_a_lower_threshold_when_it_separates_right_from_wrong() -> None:
    # Right answers where both heads agree sit at 0.5; wrong ones at 0.6 without agreement.
    held = [*_inside(80, 0.5, agreed=True), *_inside(20, 0.6, right=False), *_negatives(50, 0.6)]
    rule = tune_rule(held)
    assert rule.threshold > 0.6
    assert rule.agreed <= 0.5
    assert rule.metrics["heldout_coverage"] == pytest.approx(0.8)


def test_out_of_scope_predictions_are_never_served() -> None:
    held = [*_inside(10, 0.9), Held("negative", OUT_OF_SCOPE, 0.99, True, OUT_OF_SCOPE)]
    assert tune_rule(held).metrics["heldout_negatives_served"] == 0.0


def test_nothing_meets_the_target_gives_the_strictest_rule() -> None:
    rule = tune_rule([*_inside(10, 0.99, right=False)])
    assert rule.threshold == rule.agreed == 0.99
    assert "heldout_coverage" not in rule.metrics


def test_left_out_classes_are_a_share_spread_over_the_folds() -> None:
    classes = [f"c{i:02d}" for i in range(40)] + [OUT_OF_SCOPE]
    folds = [left_out(classes, fold, 2) for fold in (0, 1)]
    assert not folds[0] & folds[1]
    assert len(folds[0] | folds[1]) == round(NOVEL_SHARE * 40)
    assert OUT_OF_SCOPE not in folds[0] | folds[1]
    assert folds == [left_out(classes, fold, 2) for fold in (0, 1)]  # deterministic


def test_few_classes_leave_none_out() -> None:
    assert left_out(["a", "b", "c", OUT_OF_SCOPE], 0, 1) == set()


def test_a_stricter_policy_raises_the_threshold() -> None:
    # Right answers spread over 0.5..0.95; most negatives stay under 0.8, two reach 0.92.
    held = [
        *[h for c in (0.5, 0.6, 0.7, 0.8, 0.9, 0.95) for h in _inside(20, c)],
        *[h for c in (0.3, 0.5, 0.6, 0.7, 0.8) for h in _negatives(20, c)],
        *_negatives(2, 0.92),
    ]
    default = tune_rule(held)
    strict = tune_rule(held, RouterPolicy(wrong_target=0.001))
    lenient = tune_rule(held, RouterPolicy(wrong_target=0.2))
    assert strict.threshold > default.threshold >= lenient.threshold
    assert strict.metrics["heldout_wrong_rate"] <= 0.001
    assert lenient.metrics["heldout_coverage"] >= default.metrics["heldout_coverage"]


def test_without_out_of_scope_traffic_only_misroutes_count() -> None:
    held = [*_inside(100, 0.5), *_negatives(100, 0.9)]
    assert tune_rule(held, RouterPolicy(oos_share=0.0)).threshold <= 0.5
    assert tune_rule(held, RouterPolicy(oos_share=0.3)).threshold > 0.9


def test_weights_rank_by_coverage_then_negatives_served_then_order() -> None:
    def rule(coverage: float, served: float) -> Thresholds:
        metrics = {"heldout_coverage": coverage, "heldout_negatives_served": served}
        return Thresholds(0.5, 0.5, metrics)

    rules = [rule(1.0, 0.4), rule(1.0, 0.3), rule(1.0, 0.3), rule(0.9, 0.0)]
    ranked = sorted(range(len(rules)), key=lambda i: _preference(rules[i], i), reverse=True)
    assert ranked == [1, 2, 0, 3]


def _held(kind: str, n: int, confidence: float, similarity: float) -> list[Held]:
    truth = "a" if kind == "in" else "z"
    return [Held(kind, "a", confidence, False, truth, similarity) for _ in range(n)]


def test_a_similarity_gate_is_tuned_when_confident_negatives_are_far() -> None:
    # Negatives are more confident than every right answer, but far from the class centroid.
    held = [
        *_held("in", 50, 0.9, 0.8),
        *_held("in", 50, 0.6, 0.7),
        *_held("negative", 40, 0.95, 0.3),
    ]
    rule = tune_rule(held, RouterPolicy(similarity_gate=True))
    assert rule.similarity == pytest.approx(0.32)  # the most permissive gate above 0.3
    assert rule.threshold <= 0.6
    assert rule.metrics["heldout_coverage"] == 1.0
    assert rule.metrics["heldout_negatives_served"] == 0.0
    ungated = tune_rule(held)  # the gate is opt-in
    assert ungated.similarity is None
    assert ungated.metrics["heldout_coverage"] == 0.0


def test_no_gate_when_it_does_not_answer_more() -> None:
    held = [*_held("in", 50, 0.9, 0.8), *_held("negative", 40, 0.5, 0.3)]
    rule = tune_rule(held, RouterPolicy(similarity_gate=True))
    assert rule.similarity is None
    assert 0.5 < rule.threshold <= 0.9


def test_the_vectorised_search_matches_a_plain_loop() -> None:
    rng = np.random.default_rng(7)
    held = [
        Held(
            "in" if i % 3 else "negative",
            "a" if rng.random() < 0.8 else "b",
            float(rng.random()),
            bool(rng.random() < 0.5),
            "a" if i % 3 else "z",
        )
        for i in range(300)
    ]
    rule = tune_rule(held)
    n_in = sum(h.kind == "in" for h in held)
    n_out = len(held) - n_in
    best = None
    for t in GRID:
        for a in [g for g in GRID if g <= t]:
            right = bad = leaked = 0
            for h in held:
                if not (h.confidence >= t or (h.agreed and h.confidence >= a)):
                    continue
                if h.kind != "in":
                    leaked += 1
                elif h.predicted == h.truth:
                    right += 1
                else:
                    bad += 1
            leak = leaked / n_out
            answered = (1 - OOS_PRIOR) * (right + bad) / n_in + OOS_PRIOR * leak
            risk = (1 - OOS_PRIOR) * bad / n_in + OOS_PRIOR * leak
            if answered and risk / answered <= WRONG_TARGET and (best is None or right > best[0]):
                best = (right, t, a)
    assert best is not None
    assert (rule.threshold, rule.agreed) == (best[1], best[2])
    assert rule.metrics["heldout_coverage"] == pytest.approx(
        best[0] / sum(h.kind == "in" for h in held), abs=1e-4
    )
