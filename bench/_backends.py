"""Throwaway Redis and PostgreSQL servers on free loopback ports, for the fault scenarios.

Each server lives in its own temporary folder and is stopped by its own PID, never through a
service manager: the machine's shared servers (6379, 5432) are never touched. A server can be
stopped and started again on the same port and data, as an outage and a recovery.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Final

__all__ = ["PostgresServer", "RedisServer", "free_port", "wait_for"]

HOST: Final = "127.0.0.1"
_PG_BIN: Final = Path("/usr/lib/postgresql/15/bin")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((HOST, 0))
        port: int = probe.getsockname()[1]
        return port


def wait_for(condition: object, *, timeout: float, what: str, step: float = 0.05) -> float:
    """Poll ``condition()`` until true; the seconds it took, or a RuntimeError after
    ``timeout`` (a bench bound, so a broken scenario stops by itself)."""
    assert callable(condition)
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > timeout:
            raise RuntimeError(f"{what}: not within {timeout:.0f} s")
        time.sleep(step)
    return time.monotonic() - started


def _accepts(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.settimeout(0.2)
        return probe.connect_ex((HOST, port)) == 0


def _stop_pid(pid: int, sig: signal.Signals = signal.SIGTERM, timeout: float = 30.0) -> None:
    """Signal ``pid`` and wait until it is gone (SIGKILL past ``timeout``)."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


class RedisServer:
    """``redis-server`` on a free port, no persistence (as the hot tier runs)."""

    def __init__(self) -> None:
        self.port = free_port()
        self.folder = Path(tempfile.mkdtemp(prefix="ragc-fault-redis-"))
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://{HOST}:{self.port}/0"

    def start(self) -> None:
        command = [
            shutil.which("redis-server") or "redis-server",
            "--port",
            str(self.port),
            "--bind",
            HOST,
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(self.folder),
        ]
        self.process = subprocess.Popen(
            command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        wait_for(lambda: _accepts(self.port), timeout=30, what=f"redis-server on {self.port}")

    def stop(self) -> None:
        if self.process is not None:
            _stop_pid(self.process.pid)
            self.process.wait()
            self.process = None

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.folder, ignore_errors=True)


class PostgresServer:
    """A PostgreSQL 15 cluster of its own (``initdb`` into a temporary folder), trust auth on
    loopback. As root it runs as the ``postgres`` user, as PostgreSQL requires."""

    def __init__(self) -> None:
        self.port = free_port()
        self.folder = Path(tempfile.mkdtemp(prefix="ragc-fault-pg-"))
        self.data = self.folder / "data"
        self._user = "postgres" if os.geteuid() == 0 else None
        if self._user is not None:
            entry = pwd.getpwnam(self._user)
            os.chown(self.folder, entry.pw_uid, entry.pw_gid)
        self._run([str(_PG_BIN / "initdb"), "-D", str(self.data), "-A", "trust", "-U", "ragc"])

    @property
    def dsn(self) -> str:
        return f"host={HOST} port={self.port} dbname=postgres user=ragc connect_timeout=3"

    def _as_owner(self, command: list[str]) -> list[str]:
        return ["runuser", "-u", self._user, "--", *command] if self._user else command

    def _run(self, command: list[str]) -> None:
        subprocess.run(self._as_owner(command), check=True, capture_output=True)

    def start(self) -> None:
        options = f"-p {self.port} -k {self.folder} -c listen_addresses={HOST} -c fsync=off"
        self._run(
            [
                str(_PG_BIN / "pg_ctl"),
                "-D",
                str(self.data),
                "-o",
                options,
                "-l",
                str(self.folder / "log"),
                "-w",
                "start",
            ]
        )
        wait_for(lambda: _accepts(self.port), timeout=60, what=f"postgres on {self.port}")

    @property
    def pid(self) -> int | None:
        pid_file = self.data / "postmaster.pid"
        if not pid_file.exists():
            return None
        return int(pid_file.read_text().split("\n", 1)[0])

    def stop(self) -> None:
        """A fast shutdown (SIGINT to the postmaster: sessions are cut, as in an outage)."""
        pid = self.pid
        if pid is not None:
            _stop_pid(pid, signal.SIGINT)

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.folder, ignore_errors=True)


@contextlib.contextmanager
def running(server: RedisServer | PostgresServer) -> Iterator[RedisServer | PostgresServer]:
    """``server`` started, and stopped and removed when the block ends."""
    try:
        server.start()
        yield server
    finally:
        server.close()
