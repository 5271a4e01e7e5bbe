"""The route memo: a bounded LRU of router verdicts by question text."""

from __future__ import annotations

from schemas.router import Prediction
from serving.runtime import RouteMemo


def _verdict(intent: str) -> Prediction:
    return Prediction(intent=intent, confidence=0.9, candidates=(), reason=f"matched {intent}")


def test_it_forgets_the_least_recently_used_text() -> None:
    memo = RouteMemo(2)
    memo.put("a", _verdict("A"))
    memo.put("b", _verdict("B"))
    assert memo.get("a") == _verdict("A")  # "a" is now the most recently used
    memo.put("c", _verdict("C"))
    assert memo.get("b") is None
    assert (memo.get("a"), memo.get("c")) == (_verdict("A"), _verdict("C"))
    assert len(memo) == 2


def test_putting_a_known_text_again_refreshes_it() -> None:
    memo = RouteMemo(2)
    memo.put("a", _verdict("A"))
    memo.put("b", _verdict("B"))
    memo.put("a", _verdict("A"))
    memo.put("c", _verdict("C"))
    assert memo.get("b") is None
    assert memo.get("a") == _verdict("A")


def test_size_zero_remembers_nothing() -> None:
    memo = RouteMemo(0)
    memo.put("a", _verdict("A"))
    assert memo.get("a") is None
    assert len(memo) == 0
