"""``ragc serve --workers 2`` outlives a worker: one killed with SIGKILL is replaced, and the
other goes on answering meanwhile; its metrics are the sum over its workers, whichever of them
serves the scrape."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import ROOT, free_port
from tests.e2e.conftest import Compiled

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def _workers(pid: int) -> set[int]:
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return {int(c) for c in children}


def _ready(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as response:
            return bool(response.status == 200)
    except OSError:
        return False


def _answered(port: int) -> float:
    """``ragc_http_requests_total`` of ``POST /v1/answer`` 200s, from one scrape."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    found = re.search(
        r'ragc_http_requests_total\{method="POST",route="/v1/answer",status="200"\} (\S+)', text
    )
    return float(found[1]) if found else 0.0


def _ask(port: int) -> None:
    body = json.dumps({"question": "What's your return window?"}).encode()
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/v1/answer",
        data=body,
        headers={"content-type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 200


def _until(condition: object, process: subprocess.Popen[bytes], what: str) -> None:
    """Poll ``condition`` while the server lives; a generous bound only against a hang."""
    deadline = time.monotonic() + 180
    while not condition():  # type: ignore[operator]
        assert process.poll() is None, f"the server exited while waiting for {what}"
        assert time.monotonic() < deadline, f"no {what} in 180 s"
        time.sleep(0.2)


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="needs Linux /proc")
def test_a_killed_worker_is_respawned_and_the_server_keeps_answering(
    compiled: Compiled, tmp_path: Path
) -> None:
    port = free_port()
    store = f"sqlite:///{compiled.root / 'knowledge.db'}"
    env = {**os.environ, "RAGC_AUDIT": "0", "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-m", "ragc", "serve", "--store", store, "--port", str(port)]
    log = tmp_path / "serve.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [*command, "--workers", "2"],
            cwd=tmp_path,
            env=env,
            stdout=out,
            stderr=out,
            start_new_session=True,  # its own process group: nothing outlives the test
        )

    def started() -> int:  # granian logs "Started worker-N" once a worker serves
        return log.read_text(errors="replace").count("Started worker-")

    try:
        _until(lambda: started() == 2 and _ready(port), process, "two workers")
        for _ in range(40):  # spread over both workers by the kernel's accept queue
            _ask(port)
        assert {_answered(port) for _ in range(10)} == {40.0}  # every scrape: both workers
        first = _workers(process.pid)
        victim = min(first)
        os.kill(victim, signal.SIGKILL)
        _until(lambda: started() == 3 and _ready(port), process, "a new worker serving")
        assert process.poll() is None
        assert victim not in _workers(process.pid)
        assert len(_workers(process.pid) - first) == 1  # a new process took the dead one's place
        _ask(port)
        assert _answered(port) == 41.0  # the dead worker's requests still count
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)  # the workers too, not only the main process
            process.wait()
