"""Audit writes off the answer path: a queue drained in batches by a background thread.

``record`` only appends to a deque; the writer thread flushes every ``interval`` seconds (or
at ``batch`` events), and ``close`` flushes what is left, so a clean shutdown loses nothing.
While the sink is down the queue holds at most ``capacity`` events: beyond that the oldest are
dropped (counted, and logged once each time dropping starts), so an outage costs bounded memory
and never blocks an answer.

The writer shares the interpreter with the event loop: while it turns events into rows it holds
the GIL, and the loop waits (up to the 5 ms switch interval at a time). So it writes in small
transactions of at most ``chunk`` events and yields the GIL between them, which keeps its pauses
short at the cost of more commits.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Final, Protocol

from schemas.errors import RagcError
from stores.audit import AuditEvent

__all__ = ["CAPACITY", "AuditSink", "AuditWriter"]

CAPACITY: Final = 100_000
"""Audit events queued at most while the sink is down (some tens of MB)."""

logger = logging.getLogger(__name__)


class AuditSink(Protocol):
    """Where audited answers go (the embedded SQLite log, or Postgres)."""

    def record(self, events: list[AuditEvent]) -> None: ...


class AuditWriter:
    """Batches audit events to a sink from a background thread."""

    def __init__(
        self,
        sink: AuditSink,
        *,
        interval: float = 0.2,
        batch: int = 1000,
        chunk: int = 128,
        capacity: int = CAPACITY,
        on_drop: Callable[[int], None] | None = None,
    ) -> None:
        self.sink = sink
        self.interval = interval
        self.batch = batch
        self.chunk = chunk
        self.capacity = max(1, capacity)
        self.dropped = 0
        """Events dropped since start because the queue was full."""
        self._on_drop = on_drop
        self._dropping = False
        self._failing = False
        self._drop_lock = threading.Lock()
        self._queue: deque[AuditEvent] = deque(maxlen=self.capacity)
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._flush_lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="ragc-audit", daemon=True)
        self._thread.start()

    def record(self, event: AuditEvent) -> None:
        """Queue one event (never blocks on I/O); a full queue drops its oldest."""
        if len(self._queue) >= self.capacity:
            self._drop(1)
        self._queue.append(event)  # a bounded deque: the oldest falls out of the other end
        if len(self._queue) >= self.batch:
            self._wake.set()

    def _drop(self, count: int) -> None:
        with self._drop_lock:
            self.dropped += count
            starting, self._dropping = not self._dropping, True
        if self._on_drop is not None:
            self._on_drop(count)
        if starting:
            logger.error(
                "audit queue full (%d events, the sink is failing): dropping the oldest",
                self.capacity,
            )

    def flush(self) -> int:
        """Write everything queued so far; returns how many events were written."""
        with self._flush_lock:
            written = 0
            while self._queue:
                if written:
                    time.sleep(0)  # let the event loop have the GIL between transactions
                events = [self._queue.popleft() for _ in range(min(self.chunk, len(self._queue)))]
                try:
                    self.sink.record(events)
                except Exception as exc:  # noqa: BLE001 - a failed log must not fail an answer
                    self._failed(exc)
                    self._requeue(events)
                    return written
                if self._failing:
                    self._failing = False
                    logger.warning("audit log writable again; writing the queued answers")
                written += len(events)
                if self._dropping and not self._queue:
                    self._dropping = False
                    logger.warning("audit queue drained: %d events were dropped", self.dropped)
            return written

    def _failed(self, exc: Exception) -> None:
        """Log a failed write once per outage (a ragc error in one line, anything else with
        its traceback); the writer retries every ``interval`` meanwhile."""
        if self._failing:
            return
        self._failing = True
        if isinstance(exc, RagcError):
            logger.error("audit writes failing, answers queued until they work: %s", exc)
        else:
            logger.exception("audit writes failing, answers queued until they work")

    def _requeue(self, events: list[AuditEvent]) -> None:
        """Put failed events back in front; what no longer fits (the oldest) is dropped."""
        overflow = len(self._queue) + len(events) - self.capacity
        if overflow > 0:
            self._drop(overflow)
            events = events[overflow:]
        self._queue.extendleft(reversed(events))

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.interval)
            self._wake.clear()
            self.flush()

    def close(self) -> None:
        """Stop the thread and flush what is left."""
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout=10)
        self.flush()
