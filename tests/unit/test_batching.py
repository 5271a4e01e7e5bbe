"""The encoder batcher: concurrent questions share embed calls, errors reach their callers.

Nothing here waits on the clock: a gated embedder holds the first call until the test has
queued the others, so what lands in which batch is decided by the test, not by timing.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator, Sequence
from concurrent.futures import CancelledError, Future

import numpy as np
import numpy.typing as npt
import pytest

from providers.embedders import HashingEmbedder
from serving.batching import EncoderBatcher, EncoderClosedError

QUESTIONS = [f"question number {i} about bikes" for i in range(10)]
WAIT = 60.0
"""Upper bound of any wait (a hang fails the test instead of blocking the suite)."""


class GatedEmbedder:
    """The hashing embedder, counting its calls; the first call waits for :attr:`gate`."""

    def __init__(self, fail_on: str | None = None) -> None:
        self.inner = HashingEmbedder(dim=64)
        self.model_id = self.inner.model_id
        self.dim = self.inner.dim
        self.fail_on = fail_on
        self.batches: list[list[str]] = []
        self.entered = threading.Event()
        """Set when the first call has started."""
        self.gate = threading.Event()
        """The first call returns once this is set."""

    def embed(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        self.batches.append(list(texts))
        if len(self.batches) == 1:
            self.entered.set()
            assert self.gate.wait(WAIT)
        if self.fail_on is not None and self.fail_on in texts:
            raise ValueError(f"cannot embed {self.fail_on!r}")
        return self.inner.embed(texts)


@pytest.fixture
def embedder() -> GatedEmbedder:
    return GatedEmbedder()


@pytest.fixture
def batcher(embedder: GatedEmbedder) -> Iterator[EncoderBatcher]:
    opened = EncoderBatcher(embedder, max_batch=32, window=0.0)
    yield opened
    embedder.gate.set()
    opened.close()


def _hold_first(batcher: EncoderBatcher, embedder: GatedEmbedder) -> Future[np.ndarray]:
    """Submit a first question and wait until the thread is embedding it (held at the gate)."""
    first = batcher.submit("the first question")
    assert embedder.entered.wait(WAIT)
    return first


def _single(text: str) -> npt.NDArray[np.float32]:
    vector: npt.NDArray[np.float32] = HashingEmbedder(dim=64).embed([text])[0]
    return vector


def test_questions_queued_meanwhile_share_one_call(
    batcher: EncoderBatcher, embedder: GatedEmbedder
) -> None:
    first = _hold_first(batcher, embedder)
    futures = [batcher.submit(q) for q in QUESTIONS]
    embedder.gate.set()
    vectors = [f.result(timeout=WAIT) for f in futures]
    assert first.result(timeout=WAIT).shape == (64,)
    assert embedder.batches == [["the first question"], QUESTIONS]
    assert (batcher.calls, batcher.texts) == (2, 11)
    for question, vector in zip(QUESTIONS, vectors, strict=True):
        np.testing.assert_array_equal(vector, _single(question))


def test_awaiting_callers_are_batched_without_blocking_the_loop(
    batcher: EncoderBatcher, embedder: GatedEmbedder
) -> None:
    async def main() -> list[npt.NDArray[np.float32]]:
        first = asyncio.ensure_future(batcher.embed("the first question"))
        # The loop runs on while the encoder is held: it awaits another thread's wait here.
        assert await asyncio.to_thread(embedder.entered.wait, WAIT)
        tasks = [asyncio.ensure_future(batcher.embed(q)) for q in QUESTIONS]
        await asyncio.sleep(0)  # one turn of the loop: each task has submitted its question
        embedder.gate.set()
        await first
        return list(await asyncio.gather(*tasks))

    vectors = asyncio.run(asyncio.wait_for(main(), WAIT))
    assert embedder.batches == [["the first question"], QUESTIONS]
    for question, vector in zip(QUESTIONS, vectors, strict=True):
        np.testing.assert_array_equal(vector, _single(question))


def test_a_batch_holds_at_most_max_batch_questions(embedder: GatedEmbedder) -> None:
    batcher = EncoderBatcher(embedder, max_batch=4, window=0.0)
    try:
        _hold_first(batcher, embedder)
        futures = [batcher.submit(q) for q in QUESTIONS]
        embedder.gate.set()
        for future in futures:
            future.result(timeout=WAIT)
    finally:
        batcher.close()
    assert [len(b) for b in embedder.batches] == [1, 4, 4, 2]


def test_a_full_batch_does_not_wait_out_the_window(embedder: GatedEmbedder) -> None:
    """With a window longer than the test's bound, only a full batch can be embedded."""
    embedder.gate.set()
    batcher = EncoderBatcher(embedder, max_batch=3, window=10 * WAIT)
    try:
        futures = [batcher.submit(q) for q in QUESTIONS[:3]]
        for future in futures:
            future.result(timeout=WAIT)
    finally:
        batcher.close()
    assert embedder.batches == [QUESTIONS[:3]]


def test_an_encoder_error_reaches_its_callers_and_later_requests_still_work() -> None:
    embedder = GatedEmbedder(fail_on="boom")
    batcher = EncoderBatcher(embedder, max_batch=32, window=0.0)
    try:
        _hold_first(batcher, embedder)
        failing = [batcher.submit("boom"), batcher.submit(QUESTIONS[0])]
        embedder.gate.set()
        for future in failing:  # the batch failed as a whole
            with pytest.raises(ValueError, match="cannot embed 'boom'"):
                future.result(timeout=WAIT)

        async def later() -> npt.NDArray[np.float32]:
            with pytest.raises(ValueError, match="boom"):
                await batcher.embed("boom")
            return await batcher.embed(QUESTIONS[1])

        vector = asyncio.run(asyncio.wait_for(later(), WAIT))
    finally:
        batcher.close()
    np.testing.assert_array_equal(vector, _single(QUESTIONS[1]))


def test_a_wrong_number_of_vectors_is_an_error() -> None:
    class Short(GatedEmbedder):
        def embed(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
            return super().embed(texts)[:-1]

    embedder = Short()
    embedder.gate.set()
    batcher = EncoderBatcher(embedder, window=0.0)
    try:
        with pytest.raises(RuntimeError, match="returned 0 vectors for 1 texts"):
            batcher.submit("one").result(timeout=WAIT)
    finally:
        batcher.close()


def test_a_caller_that_gave_up_is_left_out_of_the_batch(
    batcher: EncoderBatcher, embedder: GatedEmbedder
) -> None:
    _hold_first(batcher, embedder)
    dropped = batcher.submit("nobody waits for this")
    kept = batcher.submit(QUESTIONS[0])
    assert dropped.cancel()
    embedder.gate.set()
    kept.result(timeout=WAIT)
    assert embedder.batches == [["the first question"], [QUESTIONS[0]]]
    with pytest.raises(CancelledError):
        dropped.result(timeout=0)


def test_close_fails_queued_questions_and_finishes_the_running_batch(
    embedder: GatedEmbedder,
) -> None:
    batcher = EncoderBatcher(embedder, window=0.0)
    running = _hold_first(batcher, embedder)
    queued = batcher.submit(QUESTIONS[0])
    closer = threading.Thread(target=batcher.close)
    closer.start()
    with pytest.raises(EncoderClosedError, match="shutting down"):
        queued.result(timeout=WAIT)  # failed by close() before it joins the thread
    assert closer.is_alive()  # still waiting for the running batch
    embedder.gate.set()
    closer.join(WAIT)
    assert not closer.is_alive()
    np.testing.assert_array_equal(running.result(timeout=0), _single("the first question"))
    with pytest.raises(EncoderClosedError):
        batcher.submit("after close").result(timeout=0)
    assert embedder.batches == [["the first question"]]


def test_bad_settings_are_refused(embedder: GatedEmbedder) -> None:
    with pytest.raises(ValueError, match="max_batch=0"):
        EncoderBatcher(embedder, max_batch=0)
    with pytest.raises(ValueError, match="window=-1"):
        EncoderBatcher(embedder, window=-1)


def test_each_batch_size_is_observed_and_a_failing_observer_stops_nothing(
    embedder: GatedEmbedder,
) -> None:
    sizes: list[int] = []

    def observe(size: int) -> None:
        sizes.append(size)
        raise RuntimeError("metrics are down")

    batcher = EncoderBatcher(embedder, window=0.0, observe=observe)
    try:
        _hold_first(batcher, embedder)
        futures = [batcher.submit(q) for q in QUESTIONS[:3]]
        embedder.gate.set()
        for future in futures:
            future.result(timeout=WAIT)
        assert batcher.submit("still embedding").result(timeout=WAIT).shape == (64,)
    finally:
        batcher.close()
    assert sizes == [1, 3, 1]
