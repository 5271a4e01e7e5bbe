"""Audit writes off the answer path: a queue drained in batches by a background thread.

``record`` only appends to a deque; the writer thread flushes every ``interval`` seconds (or
at ``batch`` events), and ``close`` flushes what is left, so a clean shutdown loses nothing.

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
from typing import Protocol

from stores.audit import AuditEvent

__all__ = ["AuditSink", "AuditWriter"]

logger = logging.getLogger(__name__)


class AuditSink(Protocol):
    """Where audited answers go (the embedded SQLite log, or Postgres)."""

    def record(self, events: list[AuditEvent]) -> None: ...


class AuditWriter:
    """Batches audit events to a sink from a background thread."""

    def __init__(
        self, sink: AuditSink, *, interval: float = 0.2, batch: int = 1000, chunk: int = 128
    ) -> None:
        self.sink = sink
        self.interval = interval
        self.batch = batch
        self.chunk = chunk
        self._queue: deque[AuditEvent] = deque()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._flush_lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="ragc-audit", daemon=True)
        self._thread.start()

    def record(self, event: AuditEvent) -> None:
        """Queue one event (never blocks on I/O)."""
        self._queue.append(event)
        if len(self._queue) >= self.batch:
            self._wake.set()

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
                except Exception:  # the answer path must not fail because the log did
                    logger.exception("audit write failed; %d events re-queued", len(events))
                    self._queue.extendleft(reversed(events))
                    return written
                written += len(events)
            return written

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
