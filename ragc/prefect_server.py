"""A temporary Prefect server for one CLI run, which dies with the run.

Without ``PREFECT_API_URL``, Prefect starts a temporary server in a subprocess and stops it at
exit; a run killed with SIGKILL never gets there, and the server lives on, holding its port and
its database. :func:`temporary_prefect_server` starts the same server (Prefect's own app
factory under uvicorn, as Prefect runs it) with the kernel told to stop it when its parent dies
(``PR_SET_PDEATHSIG``), and points the run's Prefect client at it.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from typing import Final

from schemas.errors import RetryableError

__all__ = ["PrefectServer", "temporary_prefect_server"]

_PR_SET_PDEATHSIG: Final = 1
STARTUP_S: Final = 60.0


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _dies_with(parent: int) -> None:
    """In the child, before exec: SIGTERM when the parent dies (and at once if it already
    has: the signal is only armed from now on)."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != parent:
        os._exit(1)


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=2) as response:  # noqa: S310 - loopback
            return bool(response.status == 200)
    except OSError:
        return False


class PrefectServer:
    """A temporary server that is starting: :meth:`ready` waits until it answers."""

    def __init__(self, url: str, process: subprocess.Popen[bytes]) -> None:
        self.url = url
        self._process = process
        self._ready = False

    def ready(self) -> None:
        """Wait until the server is healthy (at most :data:`STARTUP_S`); at once when it is."""
        deadline = time.monotonic() + STARTUP_S
        while not self._ready:
            if _healthy(self.url):
                self._ready = True
                return
            if self._process.poll() is not None or time.monotonic() > deadline:
                raise RetryableError(
                    "the temporary Prefect server did not start "
                    f"(exit status {self._process.poll()})",
                    hint="set PREFECT_API_URL to a running Prefect server, or run again",
                )
            time.sleep(0.1)


@contextlib.contextmanager
def temporary_prefect_server() -> Iterator[PrefectServer | None]:
    """Start a Prefect server of the block's own and point Prefect's client at it, unless
    ``PREFECT_API_URL`` names one (then ``None``: that server is used) or this is not Linux
    (Prefect's own temporary server then).

    The server starts in the background: the block may import the compiler meanwhile (they
    take about as long) and calls :meth:`PrefectServer.ready` before the first flow run."""
    from prefect.settings import (  # noqa: PLC0415 - Prefect only for the commands that run flows
        PREFECT_API_URL,
        get_current_settings,
        temporary_settings,
    )

    if PREFECT_API_URL.value() or not sys.platform.startswith("linux"):
        yield None
        return
    import prefect  # noqa: PLC0415

    port = _free_port()
    url = f"http://127.0.0.1:{port}/api"
    env = {
        **os.environ,
        "PREFECT_UI_ENABLED": "0",
        "PREFECT__SERVER_EPHEMERAL": "1",
        "PREFECT__SERVER_FINAL": "1",
        **get_current_settings().to_environment_variables(exclude_unset=True),
    }
    command = [
        sys.executable,
        "-m",
        "uvicorn",
        "--app-dir",
        str(prefect.__module_path__.parent),
        "--factory",
        "prefect.server.api.server:create_app",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--log-level",
        "error",
        "--lifespan",
        "on",
    ]
    parent = os.getpid()
    # preexec_fn runs between fork and exec; it only arms the death signal.
    process = subprocess.Popen(  # noqa: S603 - a fixed command line
        command,
        env=env,
        preexec_fn=lambda: _dies_with(parent),  # noqa: PLW1509
    )
    try:
        with temporary_settings({PREFECT_API_URL: url}):
            yield PrefectServer(url, process)
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
