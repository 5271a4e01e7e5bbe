"""Watch the version pointers so a flip is seen within a second, without a restart.

A background thread re-reads the rollout record and pins every ``interval`` seconds; requests
read the last state from memory. A request that has picked its version keeps it to the end, so
in-flight requests finish on the version they started with.

When the store cannot be read, or reads as having lost its pointers (a Redis flushed, or
restarted without its data: a stable version, once set, is never unset by any operation), the
watcher keeps the last state it read, so a replica goes on serving the versions it has loaded.
Its :attr:`PointerWatcher.health` says so (readiness reports "degraded"), each change of it is
logged once, and the first good read restores it.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Final, Literal, Protocol

from schemas.errors import RagcError
from schemas.rollout import PointerState, RolloutRecord
from stores.base import PointerNotifier

__all__ = ["PointerHealth", "PointerSource", "PointerWatcher"]

PointerHealth = Literal["ok", "unreachable", "lost"]
"""``ok``: the last read worked; ``unreachable``: the store did not answer; ``lost``: it answered
with no stable version after having one."""
_DEGRADED: Final[dict[str, str]] = {
    "unreachable": "the version pointers cannot be read",
    "lost": "the store has lost its version pointers (flushed or restarted empty)",
}


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
        on_health: Callable[[bool], None] | None = None,
        on_switch: Callable[[PointerState], None] | None = None,
    ) -> None:
        self.store = store
        self.interval = interval
        self.on_change = on_change
        """Called (from the watcher thread) with the new state whenever the pointers move,
        before requests use it."""
        self.on_switch = on_switch
        """Called (from the watcher thread) right after requests start using a new state."""
        self.on_health = on_health
        """Called with ``True`` when the pointers become unreadable or lost, ``False`` when
        they are read again."""
        self.state = PointerState(rollout=RolloutRecord())
        self.health: PointerHealth = "ok"
        self.problem: str | None = None
        """Why the health is not ``ok`` (the store's error), for readiness and logs."""
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._unsubscribe: Callable[[], None] | None = None
        self._refresh_lock = threading.Lock()
        self.refresh()

    def refresh(self) -> PointerState:
        """Read the pointers now (also done by the background thread and on notifications)."""
        with self._refresh_lock:  # the poller and the subscriber may both call it
            return self._refresh()

    @property
    def degraded(self) -> str | None:
        """What is wrong with the pointers the replica serves by, or ``None``."""
        if self.health == "ok":
            return None
        return f"{_DEGRADED[self.health]}; serving the versions last read ({self.problem})"

    def _health(self, health: PointerHealth, problem: str | None = None) -> None:
        """Record the health of the last read; log each change once."""
        if health != self.health:
            if self.on_health is not None:
                self.on_health(health != "ok")
            if health == "ok":
                logger.info("version pointers readable again (was: %s)", self.health)
            else:
                logger.warning(
                    "%s, serving the versions last read (%s): %s",
                    _DEGRADED[health],
                    ", ".join(sorted(self.state.in_use)) or "none",
                    problem,
                )
        self.health, self.problem = health, problem

    def _refresh(self) -> PointerState:
        try:
            state = self.store.pointers()
        except RagcError as exc:  # keep serving the last known state
            self._health("unreachable", exc.message)
            return self.state
        if state.rollout.stable is None and self.state.rollout.stable is not None:
            self._health("lost", f"stable was {self.state.rollout.stable}, now none")
            return self.state
        self._health("ok")
        changed = state != self.state
        if changed and self.on_change is not None:
            try:
                self.on_change(state)  # e.g. load the new versions before requests need them
            except RagcError as exc:
                logger.warning("cannot prepare versions of the new pointers: %s", exc)
        self.state = state
        if changed and self.on_switch is not None:
            self.on_switch(state)  # e.g. release what only the previous pointers named
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
