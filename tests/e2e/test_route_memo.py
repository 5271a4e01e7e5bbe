"""A loaded version remembers its router's verdicts: a repeated question skips the encoder."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import numpy.typing as npt
import pytest

from providers.embedders import Embedder
from serving.runtime import LoadedVersion, VersionCache
from stores import open_store
from stores.base import SnapshotStore
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
