"""``ragc serve`` and ``ragc ask``: the answer service, over HTTP or in-process."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated

import msgspec
import typer

from ragc.commands._base import (
    JsonOpt,
    StoreOpt,
    app,
    console,
    emit,
    err,
    fails_cleanly,
    opened_store,
)
from schemas.redact import redact
from schemas.settings import Environment
from stores import open_store

HEADER_READ_TIMEOUT_MS = 10_000
"""A client has this long to send a request's headers (granian's default is 30 s); its body:
``RAGC_BODY_TIMEOUT_S`` (10 s)."""
BACKPRESSURE = 512
"""Requests a worker handles at once; more wait in the listen backlog (1,024)."""


@app.command()
@fails_cleanly
def serve(
    store: StoreOpt = "",
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="Port to listen on.")] = 8000,
    workers: Annotated[int, typer.Option(min=1, help="Worker processes.")] = 1,
) -> None:
    """Serve the active snapshot over HTTP (Litestar on granian, uvloop)."""
    from serving.settings import ServeSettings  # noqa: PLC0415

    os.environ["RAGC_STORE"] = store or Environment.read().store
    ServeSettings.from_env()  # fail here, in one line, on a bad setting
    probe = open_store(os.environ["RAGC_STORE"])
    probe.close()
    err.print(
        f"ragc serving {redact(os.environ['RAGC_STORE'])} on http://{host}:{port}", highlight=False
    )
    with _metrics_folder():
        _granian(host, port, workers)


_MULTIPROC = "PROMETHEUS_MULTIPROC_DIR"
"""serving.metrics.MULTIPROC_ENV, spelled here: importing that module would load
prometheus_client in this process before the variable is set."""


@contextlib.contextmanager
def _metrics_folder() -> Iterator[None]:
    """Prometheus's multiprocess folder for the workers (set before any of them imports
    prometheus_client), so a scrape sums every worker: ``PROMETHEUS_MULTIPROC_DIR`` if given
    (its old files wiped, as prometheus_client requires), else a temporary one, removed after."""
    given = os.environ.get(_MULTIPROC)
    if given:
        folder = Path(given)
        folder.mkdir(parents=True, exist_ok=True)
        for stale in folder.glob("*.db"):
            stale.unlink()
        yield
        return
    made = tempfile.mkdtemp(prefix="ragc-metrics-")
    os.environ[_MULTIPROC] = made
    try:
        yield
    finally:
        del os.environ[_MULTIPROC]
        shutil.rmtree(made, ignore_errors=True)


def _granian(host: str, port: int, workers: int) -> None:
    from granian import Granian  # noqa: PLC0415 - the server only when serving
    from granian.constants import Interfaces, Loops  # noqa: PLC0415
    from granian.http import HTTP1Settings  # noqa: PLC0415

    Granian(
        "serving.app:create_app_from_env",
        address=host,
        port=port,
        interface=Interfaces.ASGI,
        factory=True,
        workers=workers,
        loop=Loops.uvloop,
        log_access=False,
        respawn_failed_workers=True,  # a worker that dies is replaced; the others keep serving
        http1_settings=HTTP1Settings(header_read_timeout=HEADER_READ_TIMEOUT_MS),
        backlog=1024,
        backpressure=BACKPRESSURE,
    ).serve()


@app.command()
@fails_cleanly
def ask(
    question: Annotated[str, typer.Argument(help="The question.")],
    store: StoreOpt = "",
    tenant: Annotated[str | None, typer.Option(help="Tenant id.")] = None,
    language: Annotated[str | None, typer.Option(help="Language tag (default en).")] = None,
    session: Annotated[str | None, typer.Option(help="Session id (canary assignment).")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Answer one question in-process with the serving ladder."""
    from serving.service import AnswerService  # noqa: PLC0415
    from serving.settings import ServeSettings  # noqa: PLC0415

    with opened_store(store) as s:
        settings = ServeSettings.from_env()
        service = AnswerService(msgspec.structs.replace(settings, store=s.url), s)
        try:
            answer = service.answer(question, tenant=tenant, language=language, session=session)
        finally:
            service.close()
    if as_json:
        emit(answer, True, "")
        return
    console.print(answer.answer, highlight=False)
    cites = ", ".join(src.ref for src in answer.sources) or "none"
    console.print(
        f"[dim]{answer.layer} · {answer.entry_id or '-'} · {answer.version} · "
        f"confidence {answer.confidence:.2f} · sources: {cites}[/]",
        highlight=False,
    )
