"""``ragc serve`` in a subprocess, as an operator runs it, for the fault scenarios."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import httpx
import msgspec

from bench._backends import HOST, free_port, wait_for
from bench._server import ServerProcess
from schemas.manifest import Snapshot

__all__ = ["Service", "relabel"]

ROOT = Path(__file__).resolve().parent.parent


def relabel(snapshot: Snapshot, version: str) -> Snapshot:
    """``snapshot`` as another version label (its records are keyed by the label)."""
    manifest = msgspec.structs.replace(snapshot.manifest, version=version, parent=None)
    return msgspec.structs.replace(snapshot, manifest=manifest).sealed()


@dataclasses.dataclass
class Service(ServerProcess):
    """``python -m ragc serve`` on a free port, in its own process group."""

    store: str
    log_path: Path
    workers: int = 1
    env: Mapping[str, str] = dataclasses.field(default_factory=dict)
    port: int = dataclasses.field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def base(self) -> str:
        return f"http://{HOST}:{self.port}"

    def start(self) -> None:
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("RAGC_")},
            "RAGC_PROVIDER": "offline",
            "RAGC_ADMIN_TOKEN": "faults",
            "PYTHONPATH": str(ROOT),
            **self.env,
        }
        command = [
            sys.executable,
            "-m",
            "ragc",
            "serve",
            "--store",
            self.store,
            "--port",
            str(self.port),
            "--workers",
            str(self.workers),
        ]
        self._spawn(command, env)

    def get(self, path: str, **kw: Any) -> httpx.Response:
        with httpx.Client(base_url=self.base, timeout=30) as client:
            return client.get(path, **kw)

    def ask(self, question: str, **fields: object) -> httpx.Response:
        with httpx.Client(base_url=self.base, timeout=30) as client:
            return client.post("/v1/answer", json={"question": question, **fields})

    def admin(self, path: str, body: object) -> httpx.Response:
        with httpx.Client(base_url=self.base, timeout=60) as client:
            return client.post(path, json=body, headers={"Authorization": "Bearer faults"})

    def ready(self) -> dict[str, Any] | None:
        """The ``/readyz`` body when it is 200, else ``None``."""
        assert self.process is not None
        if self.process.poll() is not None:
            raise RuntimeError(f"ragc serve exited ({self.process.returncode}):\n{self.log()}")
        try:
            response = self.get("/readyz")
        except httpx.HTTPError:
            return None
        return response.json() if response.status_code == 200 else None

    def wait_ready(self, version: str | None = None, timeout: float = 120) -> None:
        def done() -> bool:
            body = self.ready()
            return body is not None and (version is None or body.get("version") == version)

        wait_for(
            done, timeout=timeout, what=f"ragc serve ready{f' on {version}' if version else ''}"
        )

    def workers_now(self) -> set[int]:
        assert self.process is not None
        pid = self.process.pid
        path = Path(f"/proc/{pid}/task/{pid}/children")
        return {int(c) for c in path.read_text().split()} if path.exists() else set()

    def rss_mb(self) -> float:
        """Resident memory of the workers, in MB."""
        total = 0
        for pid in self.workers_now():
            with contextlib.suppress(FileNotFoundError):
                for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
        return total / 1024

    def metric(self, name: str) -> float:
        """The sum of a metric's samples named exactly ``name`` (any labels)."""
        text = self.get("/metrics").text
        total = 0.0
        for line in text.splitlines():
            if line.startswith(name) and line[len(name) : len(name) + 1] in ("{", " "):
                total += float(line.rsplit(" ", 1)[1])
        return total
