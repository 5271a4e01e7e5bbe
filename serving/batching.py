"""One encoder thread per embedder: concurrent questions are embedded together, in batches.

Embedding one question costs MiniLM a whole forward pass, most of it per call rather than per
text, so the encoder embeds several times as many sentences per second in batches as one at a
time. An :class:`EncoderBatcher` owns a thread that takes every question queued so far, waits
at most ``window`` seconds after the oldest one was queued (or until ``max_batch`` are
waiting), embeds them in one ``embedder.embed(texts)`` call and resolves each caller's future
with its row. A request on the event loop awaits :meth:`EncoderBatcher.embed`, so the loop goes
on reading other requests meanwhile; a worker thread can block on :meth:`EncoderBatcher.submit`.

The batch does not change the vectors: :class:`~providers.embedders.MiniLMEmbedder` pads each
batch with an attention mask and pools over each text's own tokens, and its int8 model
quantises only its weights, so no activation scale depends on the batch
(``tests/e2e/test_route_memo.py`` checks that a batched vector routes exactly like a single
one). An error of the encoder fails the futures of that batch only: the thread goes on with
the next one. :meth:`EncoderBatcher.close` fails whatever is still queued with
:class:`EncoderClosedError` and joins the thread.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from typing import Final

from providers.embedders import Embedder
from schemas.arrays import Floats
from schemas.errors import RetryableError

__all__ = ["EncoderBatcher", "EncoderClosedError"]

logger = logging.getLogger(__name__)


MAX_BATCH: Final = 32
"""Questions embedded in one call at most (``RAGC_ENCODER_BATCH``)."""
WINDOW_S: Final = 0.001
"""Longest wait for company after the oldest queued question (``RAGC_ENCODER_WINDOW_MS``)."""


class EncoderClosedError(RetryableError):
    """The service is shutting down: the question was not embedded."""

    def __init__(self) -> None:
        super().__init__(
            "the answer service is shutting down", hint="retry: another replica will answer"
        )


class _Job:
    __slots__ = ("future", "queued", "text")

    def __init__(self, text: str) -> None:
        self.text = text
        self.queued = time.monotonic()
        self.future: Future[Floats] = Future()


class EncoderBatcher:
    """Batches concurrent ``embed`` calls of one embedder on its own thread (started lazily)."""

    def __init__(
        self,
        embedder: Embedder,
        *,
        max_batch: int = MAX_BATCH,
        window: float = WINDOW_S,
        observe: Callable[[int], None] | None = None,
    ) -> None:
        """``observe`` is told the size of each batch embedded (on the encoder thread)."""
        if max_batch < 1 or window < 0:
            raise ValueError(f"max_batch={max_batch} must be >= 1 and window={window} >= 0")
        self.embedder = embedder
        self.max_batch = max_batch
        self.window = window
        self.observe = observe
        self.calls = 0
        """``embed`` calls made so far."""
        self.texts = 0
        """Texts embedded so far (``texts / calls`` is the mean batch)."""
        self._queue: deque[_Job] = deque()
        self._ready = threading.Condition(threading.Lock())
        self._closed = False
        self._thread: threading.Thread | None = None

    def submit(self, text: str) -> Future[Floats]:
        """A future of ``text``'s vector (failed with :class:`EncoderClosedError` once closed)."""
        job = _Job(text)
        with self._ready:
            if self._closed:
                job.future.set_exception(EncoderClosedError())
                return job.future
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name=f"encoder-{self.embedder.model_id}", daemon=True
                )
                self._thread.start()
            self._queue.append(job)
            # Wake the thread when it waits for a first job, or for a full batch.
            if len(self._queue) == 1 or len(self._queue) == self.max_batch:
                self._ready.notify()
        return job.future

    async def embed(self, text: str) -> Floats:
        """``text``'s vector, awaited without blocking the event loop."""
        return await asyncio.wrap_future(self.submit(text))

    def close(self) -> None:
        """Fail the queued questions, let the running batch finish, and stop the thread."""
        with self._ready:
            self._closed = True
            pending = list(self._queue)
            self._queue.clear()
            self._ready.notify()
            thread = self._thread
        for job in pending:
            if job.future.set_running_or_notify_cancel():
                job.future.set_exception(EncoderClosedError())
        if thread is not None and thread is not threading.current_thread():
            thread.join()

    def _take(self) -> list[_Job] | None:
        """The next batch, once the window has passed or it is full; ``None`` once closed."""
        with self._ready:
            while not self._queue:
                if self._closed:
                    return None
                self._ready.wait()
            deadline = self._queue[0].queued + self.window
            while len(self._queue) < self.max_batch and not self._closed:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._ready.wait(left)
            count = min(len(self._queue), self.max_batch)
            return [self._queue.popleft() for _ in range(count)]

    def _run(self) -> None:
        while (batch := self._take()) is not None:
            # A caller that gave up (a cancelled request) is dropped from the batch.
            jobs = [job for job in batch if job.future.set_running_or_notify_cancel()]
            if not jobs:
                continue
            try:
                vectors = self.embedder.embed([job.text for job in jobs])
                if len(vectors) != len(jobs):
                    raise RuntimeError(  # noqa: TRY301 - failed like any encoder error
                        f"{self.embedder.model_id} returned {len(vectors)} vectors "
                        f"for {len(jobs)} texts"
                    )
            except Exception as exc:  # noqa: BLE001 - each caller gets it; the thread goes on
                for job in jobs:
                    job.future.set_exception(exc)
                continue
            self.calls += 1
            self.texts += len(jobs)
            for job, vector in zip(jobs, vectors, strict=True):
                job.future.set_result(vector)
            if self.observe is not None:
                try:
                    self.observe(len(jobs))
                except Exception:  # a metric must not stop the encoder
                    logger.exception("observing an encoder batch failed")
