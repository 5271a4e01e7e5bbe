"""Watch the version pointers so a flip is seen within a second, without a restart.

A background thread re-reads the rollout record and pins every ``interval`` seconds; requests
read the last state from memory. A request that has picked its version keeps it to the end, so
in-flight requests finish on the version they started with.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Protocol

from schemas.errors import RagcError
from schemas.rollout import PointerState, RolloutRecord
from stores.base import PointerNotifier

__all__ = ["PointerSource", "PointerWatcher"]


class PointerSource(Protocol):
    """What the watcher reads (a snapshot store); one that is also a
    :class:`~stores.base.PointerNotifier` (Redis) is followed by its change messages too."""

    def pointers(self) -> PointerState: ...


logger = logging.getLogger(__name__)


class PointerWatcher:
    """The latest :class:`PointerState` of a store, refreshed in the background."""

    def __init__(
        self,
        store: PointerSource,
        *,
        interval: float = 0.25,
        on_change: Callable[[PointerState], None] | None = None,
    ) -> None:
        self.store = store
        self.interval = interval
        self.on_change = on_change
        """Called (from the watcher thread) with the new state whenever the pointers move."""
        self.state = PointerState(rollout=RolloutRecord())
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._unsubscribe: Callable[[], None] | None = None
        self._refresh_lock = threading.Lock()
        self.refresh()

    def refresh(self) -> PointerState:
        """Read the pointers now (also done by the background thread and on notifications)."""
        with self._refresh_lock:  # the poller and the subscriber may both call it
            return self._refresh()

    def _refresh(self) -> PointerState:
        try:
            state = self.store.pointers()
        except RagcError as exc:  # keep serving the last known state
            logger.warning("cannot read version pointers: %s", exc)
            return self.state
        if state != self.state and self.on_change is not None:
            try:
                self.on_change(state)  # e.g. load the new versions before requests need them
            except RagcError as exc:
                logger.warning("cannot prepare versions of the new pointers: %s", exc)
        self.state = state
        return self.state

    def start(self) -> None:
        """Poll in the background and, where the store publishes pointer changes (Redis),
        also refresh on every change message; polling remains the fallback."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="ragc-pointers", daemon=True)
            self._thread.start()
        if isinstance(self.store, PointerNotifier) and self._unsubscribe is None:
            try:
                self._unsubscribe = self.store.subscribe_pointer_changes(self._on_message)
            except RagcError as exc:
                logger.warning("pointer notifications unavailable, polling only: %s", exc)

    def _on_message(self, _message: str) -> None:
        self.refresh()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.refresh()

    def stop(self) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
