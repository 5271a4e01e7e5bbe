"""How long a client may take to send a request body, enforced by one timer per process.

A client that sends its headers and then trickles (or never sends) its body would hold a
request, and its connection, for as long as it likes. Each body read is armed with a deadline;
one watcher task cancels the reads that outlive theirs, and the reader answers 408 and closes
the connection. A timer per request (``asyncio.timeout``) costs about 5 µs, a third of an L1
answer; arming here is a dict insert, and the watcher ticks only while reads are armed.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Awaitable
from typing import Final, TypeVar

from serving.errors import BodyTimeoutError

__all__ = ["TICK_S", "ReadDeadlines"]

T = TypeVar("T")

TICK_S: Final = 0.5
"""How often the watcher looks for expired reads (a read may outlive its deadline by this)."""


class ReadDeadlines:
    """Deadlines of the body reads in flight on one event loop.

    :meth:`within` runs a read under its deadline. Underneath: ``arm`` before reading,
    ``disarm`` right after, with no ``await`` between the last read and ``disarm``; a read
    cancelled by the watcher raises ``CancelledError`` in its task, and :meth:`expired` (true
    once, for that task) tells it from a real cancellation.
    """

    def __init__(self, timeout: float, *, tick: float = TICK_S) -> None:
        self.timeout = timeout
        self.tick = tick
        self._armed: dict[asyncio.Task[object], float] = {}
        self._expired: weakref.WeakSet[asyncio.Task[object]] = weakref.WeakSet()
        self._watcher: asyncio.Task[None] | None = None

    async def within(self, reading: Awaitable[T]) -> T:
        """Await ``reading`` (a body read) under the deadline; past it, raise
        :class:`~serving.errors.BodyTimeoutError` (a 408)."""
        task = self.arm()
        try:
            return await reading
        except asyncio.CancelledError:
            if self.expired(task):
                raise BodyTimeoutError(self.timeout) from None
            raise
        finally:
            self.disarm(task)

    def arm(self) -> asyncio.Task[object] | None:
        """Start the deadline of the current task's read (``None`` outside a task)."""
        task = asyncio.current_task()
        if task is None:
            return None
        loop = task.get_loop()
        self._armed[task] = loop.time() + self.timeout
        if self._watcher is None or self._watcher.done():
            self._watcher = loop.create_task(self._watch(), name="ragc-body-deadlines")
        return task

    def disarm(self, task: asyncio.Task[object] | None) -> None:
        if task is not None:
            self._armed.pop(task, None)

    def expired(self, task: asyncio.Task[object] | None) -> bool:
        """Whether ``task`` was cancelled for its deadline (and, if so, undo the cancel so the
        reader can answer)."""
        if task is None or task not in self._expired:
            return False
        self._expired.discard(task)
        task.uncancel()
        return True

    async def _watch(self) -> None:
        loop = asyncio.get_running_loop()
        while self._armed:
            await asyncio.sleep(self.tick)
            now = loop.time()
            for task, deadline in list(self._armed.items()):
                if deadline <= now:
                    del self._armed[task]
                    self._expired.add(task)
                    task.cancel()
