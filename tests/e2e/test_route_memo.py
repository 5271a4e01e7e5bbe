"""A loaded version remembers its router's verdicts: a repeated question skips the encoder; a
question it has not seen can be embedded apart (in a batch) and routes the same."""

from __future__ import annotations

import json
import weakref
from collections.abc import Iterator, Sequence

import numpy as np
import numpy.typing as npt
import pytest

from providers.embedders import Embedder
from serving.batching import EncoderBatcher
from serving.runtime import LoadedVersion, VersionCache
from stores import open_store
from stores.base import SnapshotStore
from tests.conftest import EXAMPLES
from tests.e2e.conftest import Compiled

pytestmark = [pytest.mark.e2e]

ROUTED = "how long does the 500 wh battery take to charge from empty"


class CountingEmbedder:
    """Wraps the version's encoder and counts the texts it embeds."""

    def __init__(self, inner: Embedder) -> None:
        self.inner = inner
        self.model_id = inner.model_id
        self.dim = inner.dim
        self.texts: list[str] = []

    def embed(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        self.texts.extend(texts)
        return self.inner.embed(texts)


@pytest.fixture
def store(compiled: Compiled) -> Iterator[SnapshotStore]:
    opened = open_store(compiled.url)
    yield opened
    opened.close()


def _counting(store: SnapshotStore, route_cache: int) -> tuple[LoadedVersion, CountingEmbedder]:
    ready = VersionCache(store).get(store.active_version() or "")
    assert ready.embedder is not None, "the examples router reads sentence vectors"
    counting = CountingEmbedder(ready.embedder)
    return LoadedVersion(ready.loaded, counting, route_cache=route_cache), counting


def test_a_repeated_question_is_routed_once(store: SnapshotStore) -> None:
    version, counting = _counting(store, route_cache=100)
    first = version.answer(ROUTED)
    again = version.answer(ROUTED)
    assert first.layer == again.layer == "L2"
    assert (first.entry_id, first.confidence, first.explanation) == (
        again.entry_id,
        again.confidence,
        again.explanation,
    )
    assert counting.texts == [ROUTED]
    version.answer(ROUTED + "?")  # another text is routed afresh
    assert counting.texts == [ROUTED, ROUTED + "?"]


def test_the_memo_can_be_turned_off(store: SnapshotStore) -> None:
    version, counting = _counting(store, route_cache=0)
    first, again = version.answer(ROUTED), version.answer(ROUTED)
    assert (first.layer, first.entry_id) == (again.layer, again.entry_id) == ("L2", first.entry_id)
    assert counting.texts == [ROUTED, ROUTED]


def test_the_memo_is_bounded(store: SnapshotStore) -> None:
    version, counting = _counting(store, route_cache=2)
    for question in ("do you ship to norway", "how do I change my password", ROUTED):
        version.answer(question)
    version.answer("do you ship to norway")  # evicted by the third question: routed again
    assert counting.texts.count("do you ship to norway") == 2


def test_answer_cached_answers_only_what_needs_no_encoder(store: SnapshotStore) -> None:
    version, counting = _counting(store, route_cache=100)
    exact = version.answer_cached("What's your return window?")
    assert exact is not None
    assert exact.layer == "L1"
    assert version.answer_cached(ROUTED) is None  # unseen: its vector is needed
    assert counting.texts == []
    assert version.embedder is not None
    vector = version.embedder.embed([ROUTED])[0]
    routed = version.answer(ROUTED, vector=vector)  # fills the memo, as the batched path does
    assert counting.texts == [ROUTED]
    memoised = version.answer_cached(ROUTED)
    assert memoised is not None
    assert counting.texts == [ROUTED]
    assert (memoised.layer, memoised.entry_id, memoised.explanation) == (
        routed.layer,
        routed.entry_id,
        routed.explanation,
    )


def test_the_memo_does_not_keep_its_version_alive(store: SnapshotStore) -> None:
    """The memo holds plain verdicts (no bound method of the version, so no reference cycle): a
    dropped version is freed by its reference count at once, not left to the collector (which
    never frees what gc.freeze() moved out of its way)."""
    version, _ = _counting(store, route_cache=100)
    version.answer(ROUTED)
    assert len(version.memo) == 1
    gone = weakref.ref(version)
    del version
    assert gone() is None


def _questions() -> list[str]:
    lines = [
        line
        for name in ("queries.jsonl", "regression.jsonl")
        for line in (EXAMPLES / name).read_text("utf-8").splitlines()
    ]
    texts = [json.loads(line)["query"] for line in lines if line.strip()][:29]
    return list(dict.fromkeys([*texts, ROUTED, "who won the world cup in 1998", "hi"]))


def test_a_batched_vector_routes_exactly_like_a_single_one(store: SnapshotStore) -> None:
    """MiniLM pads a batch with an attention mask: a question's vector and verdict do not
    depend on the questions it shares a batch with."""
    ready = VersionCache(store).get(store.active_version() or "")
    router, embedder = ready.loaded.router, ready.embedder
    assert router is not None
    assert embedder is not None
    questions = _questions()
    batcher = EncoderBatcher(embedder, max_batch=len(questions), window=600.0)
    try:
        futures = [batcher.submit(q) for q in questions]  # one full batch: embedded at once
        batched = [f.result(timeout=600) for f in futures]
    finally:
        batcher.close()
    assert (batcher.calls, batcher.texts) == (1, len(questions))
    routed = 0
    for question, vector in zip(questions, batched, strict=True):
        single = embedder.embed([question])[0]
        np.testing.assert_allclose(vector, single, rtol=0, atol=1e-6)
        prediction = router.predict(question, vector)
        assert prediction == router.predict(question, single), question
        routed += prediction.intent is not None
    assert routed >= len(questions) // 2  # most of them reach an entry: the check has teeth
