"""The knowledge-changed webhook's dispatcher: a recorded delivery handed on.

The :class:`Dispatcher` works in one of two modes:

- ``prefect-event`` (``PREFECT_API_URL`` is set): emit the Prefect event
  ``ragc.knowledge.changed`` for resource ``ragc.knowledge.<name>``; the trigger of the
  ``recompile-knowledge/on-change`` deployment debounces the burst and starts the recompile.
- ``embedded`` (no Prefect server): run ``python -m ragc compile $RAGC_KNOWLEDGE --publish``
  as a subprocess, one at a time; changes that arrive during a run start exactly one more run
  after it ends.

Serving never imports ``tasks`` or ``flows``: the recompile is a separate process.
"""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import IO, Final, Literal

import msgspec

from stores.ledger import ChangeLedger, Delivery, DeliveryStatus

__all__ = [
    "EVENT",
    "DispatchMode",
    "Dispatcher",
    "RecompileCommand",
    "dispatch_mode",
    "knowledge_name",
    "recompile_command",
]

logger = logging.getLogger(__name__)

EVENT: Final = "ragc.knowledge.changed"
_OUTPUT_TAIL: Final = 600
_EVENT_NAMESPACE: Final = uuid.UUID("5b0f4d1e-8c51-4a3b-9a57-5f1e2c0d7a11")
_QUEUED: Final = "queued: a recompile is running; one more run starts when it ends"
_NOT_FOR_THE_COMPILER: Final = frozenset({"RAGC_WEBHOOK_SECRET", "RAGC_ADMIN_TOKEN"})

DispatchMode = Literal["prefect-event", "embedded"]
RecompileCommand = Callable[[str, str], Sequence[str]]
"""Builds the recompile command from the knowledge folder and the store URL."""


def knowledge_name(folder: str | None) -> str:
    """The name of a knowledge folder as an event resource takes it (``default`` for none)."""
    if not folder:
        return "default"
    path = Path(folder)
    name = path.name or path.resolve().name
    cleaned = re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-.")[:64]
    return cleaned or "default"


def dispatch_mode(environ: Mapping[str, str] | None = None) -> DispatchMode:
    """``prefect-event`` when ``PREFECT_API_URL`` is set, else ``embedded``."""
    env = os.environ if environ is None else environ
    return "prefect-event" if env.get("PREFECT_API_URL", "").strip() else "embedded"


def recompile_command(knowledge: str, store: str) -> list[str]:
    """The embedded recompile: this interpreter running ``ragc compile DIR --publish``."""
    return [sys.executable, "-m", "ragc", "compile", knowledge, "--publish", "--store", store]


class _Run(msgspec.Struct, kw_only=True):
    process: subprocess.Popen[bytes]
    deliveries: list[str]
    output: IO[bytes]
    started: float


class Dispatcher:
    """Hands recorded deliveries on: a Prefect event, or a debounced recompile subprocess.

    In embedded mode at most one recompile runs at a time. Deliveries that arrive during a run
    stay ``recorded`` and mark the dispatcher dirty; when the run ends, exactly one more run
    starts for all of them. :meth:`close` waits a bounded time for a running recompile, then
    stops it and reaps it; deliveries it did not finish are dispatched again at the next start.
    """

    def __init__(
        self,
        ledger: ChangeLedger,
        *,
        store: str,
        knowledge: str | None,
        mode: DispatchMode | None = None,
        command: RecompileCommand = recompile_command,
    ) -> None:
        self.ledger = ledger
        self.store = store
        self.knowledge = knowledge
        self.mode: DispatchMode = mode or dispatch_mode()
        self.default_name = knowledge_name(knowledge)
        self.runs = 0
        """Recompiles started (embedded mode)."""
        self._command = command
        self._cond = threading.Condition()
        self._run: _Run | None = None
        self._waiting: list[str] = []
        self._watchers: list[threading.Thread] = []
        self._closed = False

    # -- public -----------------------------------------------------------------------------

    @property
    def dirty(self) -> bool:
        """Changes arrived during the running recompile: one more run follows it."""
        with self._cond:
            return bool(self._waiting)

    @property
    def running(self) -> bool:
        with self._cond:
            return self._run is not None

    def dispatch(self, delivery: Delivery) -> Delivery:
        """Hand one recorded delivery on; returns it with the status it got."""
        return self.dispatch_all([delivery])[0]

    def dispatch_pending(self) -> int:
        """Dispatch what was recorded but never dispatched (at start-up); returns how many."""
        pending = self.ledger.pending()
        if pending:
            logger.info("dispatching %d pending webhook deliveries", len(pending))
            self.dispatch_all(pending)
        return len(pending)

    def dispatch_all(self, deliveries: Sequence[Delivery]) -> list[Delivery]:
        """Hand several recorded deliveries on (embedded mode: one recompile covers them all)."""
        if self.mode == "prefect-event":
            return [self._emit(d) for d in deliveries]
        return self._enqueue(deliveries)

    def wait(self, timeout: float) -> bool:
        """Wait until no recompile runs and none is due; False if ``timeout`` passed first."""
        with self._cond:
            return self._cond.wait_for(
                lambda: self._run is None and (self._closed or not self._waiting), timeout
            )

    def close(self, timeout: float = 10.0) -> None:
        """Start nothing more; give a running recompile ``timeout`` s, then stop and reap it."""
        with self._cond:
            self._closed = True
            run = self._run
            watchers = list(self._watchers)
        if run is not None:
            _stop(run.process, timeout)
        for watcher in watchers:
            watcher.join(timeout=timeout + 10)

    # -- prefect-event mode -----------------------------------------------------------------

    def _emit(self, delivery: Delivery) -> Delivery:
        from prefect.events import emit_event  # noqa: PLC0415 - only this mode pays for Prefect

        try:
            event = emit_event(
                event=EVENT,
                resource={
                    "prefect.resource.id": f"ragc.knowledge.{delivery.knowledge}",
                    "prefect.resource.name": delivery.knowledge,
                },
                payload={"changed": list(delivery.changed), "delivery": delivery.delivery},
                id=uuid.uuid5(_EVENT_NAMESPACE, delivery.delivery),
            )
        except Exception as exc:  # noqa: BLE001 - any failure is recorded, never lost silently
            return self._mark(delivery, "failed", f"the Prefect event was not emitted: {exc}")
        if event is None:
            return self._mark(
                delivery,
                "failed",
                "Prefect did not emit the event (events disabled or the client failed; "
                "see the service log)",
            )
        return self._mark(
            delivery,
            "dispatched",
            f"event {EVENT} {event.id} emitted for {event.resource.id}; the "
            "recompile-knowledge/on-change trigger starts the recompile",
        )

    # -- embedded mode ----------------------------------------------------------------------

    def _enqueue(self, deliveries: Sequence[Delivery]) -> list[Delivery]:
        if not self.knowledge:
            detail = (
                "nothing to recompile: RAGC_KNOWLEDGE is not set, so the service has no "
                "knowledge folder (set it, or set PREFECT_API_URL to trigger the Prefect "
                "deployment instead)"
            )
            return [self._mark(d, "failed", detail) for d in deliveries]
        with self._cond:
            if not self._closed:
                self._waiting.extend(d.delivery for d in deliveries)
                if self._run is None:
                    self._start_locked()
                else:
                    for delivery in deliveries:
                        self.ledger.mark(delivery.delivery, "recorded", _QUEUED)
        return [self.ledger.get(d.delivery) or d for d in deliveries]

    def _start_locked(self) -> None:
        """Start a recompile for every waiting delivery (the caller holds the lock)."""
        batch, self._waiting = self._waiting, []
        if not batch:
            return
        assert self.knowledge is not None
        argv = list(self._command(self.knowledge, self.store))
        output = tempfile.TemporaryFile()  # noqa: SIM115 - closed by the watcher
        try:
            process = subprocess.Popen(  # noqa: S603 - argv is ours, never the client's
                argv,
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                env={k: v for k, v in os.environ.items() if k not in _NOT_FOR_THE_COMPILER},
            )
        except OSError as exc:
            output.close()
            for delivery in batch:
                self.ledger.mark(delivery, "failed", f"the recompile did not start: {exc}")
            return
        self.runs += 1
        run = _Run(process=process, deliveries=batch, output=output, started=time.monotonic())
        self._run = run
        for delivery in batch:
            self.ledger.mark(delivery, "dispatched", f"recompile started (pid {process.pid})")
        logger.info("recompile started (pid %d) for %d deliveries", process.pid, len(batch))
        watcher = threading.Thread(
            target=self._watch, args=(run,), name="ragc-recompile", daemon=True
        )
        self._watchers = [w for w in self._watchers if w.is_alive()] + [watcher]
        watcher.start()

    def _watch(self, run: _Run) -> None:
        code = run.process.wait()
        seconds = time.monotonic() - run.started
        tail = _tail(run.output)
        with self._cond:
            if code == 0:
                status: DeliveryStatus = "done"
                detail = f"recompile finished in {seconds:.1f} s"
            elif self._closed:
                status = "recorded"
                detail = "recompile stopped when the service stopped; dispatched at its next start"
            else:
                status = "failed"
                detail = f"recompile exited with code {code} after {seconds:.1f} s" + (
                    f": {tail}" if tail else ""
                )
            logger.info("recompile (pid %d) ended: %s", run.process.pid, detail)
            try:
                for delivery in run.deliveries:
                    self.ledger.mark(delivery, status, detail)
            except Exception:
                logger.exception("cannot record the end of recompile (pid %d)", run.process.pid)
            finally:  # whatever happened, the next run may start
                self._run = None
                if self._waiting and not self._closed:
                    self._start_locked()
                self._cond.notify_all()

    def _mark(self, delivery: Delivery, status: DeliveryStatus, detail: str) -> Delivery:
        self.ledger.mark(delivery.delivery, status, detail)
        return msgspec.structs.replace(delivery, status=status, detail=detail)


def _tail(output: IO[bytes]) -> str:
    """The last lines a recompile printed, on one line."""
    try:
        output.seek(0, os.SEEK_END)
        size = output.tell()
        output.seek(max(0, size - _OUTPUT_TAIL))
        text = output.read().decode(errors="replace")
    finally:
        output.close()
    return " | ".join(line.strip() for line in text.splitlines() if line.strip())[-_OUTPUT_TAIL:]


def _stop(process: subprocess.Popen[bytes], timeout: float) -> None:
    """Wait up to ``timeout`` s, then terminate, then kill; always reap (no zombie)."""
    for step in (None, process.terminate, process.kill):
        if step is not None:
            step()
        try:
            process.wait(timeout=timeout if step is None else 5.0)
        except subprocess.TimeoutExpired:
            continue
        return
    process.wait()
