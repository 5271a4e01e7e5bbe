"""A granian server of the benchmark app in a subprocess, and the compiled examples it serves."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Self

import httpx

from bench._load import HOST, console

ROOT = Path(__file__).resolve().parent.parent
APP = "bench.serve_app:create_bench_app"


# ---------------------------------------------------------------------------------------------
# Store and server
# ---------------------------------------------------------------------------------------------


def compile_examples(store_url: str, build_dir: Path) -> None:
    command = [
        sys.executable,
        "-m",
        "ragc",
        "compile",
        str(ROOT / "examples"),
        "--publish",
        "--store",
        store_url,
        "--build-dir",
        str(build_dir),
    ]
    console.print(f"compiling examples/ into {store_url} (build cache {build_dir}) ...")
    started = time.perf_counter()
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        console.print(done.stdout[-3000:], done.stderr[-3000:], markup=False)
        raise SystemExit(f"compile failed with status {done.returncode}")
    console.print(f"compiled and published in {time.perf_counter() - started:.1f} s")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((HOST, 0))
        port: int = probe.getsockname()[1]
        return port


class ServerProcess:
    """A server in a subprocess of its own process group (its subclasses start it and say when
    it is ready): its log, its stop, and a with-block that runs it."""

    process: subprocess.Popen[bytes] | None
    log_path: Path

    def start(self) -> None:
        raise NotImplementedError

    def wait_ready(self) -> None:
        raise NotImplementedError

    def _spawn(self, command: list[str], env: dict[str, str]) -> None:
        """Start ``command`` in a process group of its own, its output in the log."""
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                command,
                cwd=ROOT,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def log(self) -> str:
        return self.log_path.read_text("utf-8", errors="replace")[-4000:]

    def stop(self) -> None:
        """SIGINT, then SIGKILL to the whole process group if it has not stopped in 30 s."""
        process = self.process
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)

    @contextlib.contextmanager
    def running(self) -> Iterator[Self]:
        try:
            self.start()
            self.wait_ready()
            yield self
        finally:
            self.stop()


@dataclasses.dataclass
class Server(ServerProcess):
    """granian serving the bench app in its own process group."""

    store_url: str
    _: dataclasses.KW_ONLY
    audit: bool
    log_path: Path
    route_cache: int | None = None
    encoder_batch: int | None = None
    encoder_window_ms: float | None = None
    port: int = dataclasses.field(default_factory=_free_port, init=False)
    process: subprocess.Popen[bytes] | None = dataclasses.field(default=None, init=False)

    @property
    def base(self) -> str:
        return f"http://{HOST}:{self.port}"

    def start(self) -> None:
        env = {
            **os.environ,
            "RAGC_STORE": self.store_url,
            "RAGC_AUDIT": "1" if self.audit else "0",
            "RAGC_PROVIDER": "offline",
            "PYTHONPATH": os.pathsep.join(
                p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p
            ),
        }
        env.pop("RAGC_L3_BUDGET", None)
        for name, value in (
            ("RAGC_ROUTE_CACHE", self.route_cache),
            ("RAGC_ENCODER_BATCH", self.encoder_batch),
            ("RAGC_ENCODER_WINDOW_MS", self.encoder_window_ms),
        ):
            env.pop(name, None)
            if value is not None:
                env[name] = str(value)
        command = [
            sys.executable,
            "-m",
            "granian",
            "--interface",
            "asgi",
            "--factory",
            APP,
            "--host",
            HOST,
            "--port",
            str(self.port),
            "--workers",
            "1",
            "--loop",
            "uvloop",
            "--http",
            "1",
            "--no-ws",
            "--no-access-log",
            "--log-level",
            "warning",
            "--working-dir",
            str(ROOT),
        ]
        self._spawn(command, env)

    def wait_ready(self, timeout: float = 90) -> None:
        assert self.process is not None
        deadline = time.monotonic() + timeout
        last = "no answer"
        with httpx.Client(base_url=self.base, timeout=5) as client:
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    raise RuntimeError(f"granian exited ({self.process.returncode}):\n{self.log()}")
                try:
                    response = client.get("/readyz")
                except httpx.HTTPError as exc:
                    last = f"{type(exc).__name__}"
                else:
                    if response.status_code == 200:
                        return
                    last = f"{response.status_code} {response.text}"
                time.sleep(0.2)
        raise RuntimeError(f"/readyz not 200 after {timeout:.0f} s (last: {last}):\n{self.log()}")


# ---------------------------------------------------------------------------------------------
# The run
# ---------------------------------------------------------------------------------------------
