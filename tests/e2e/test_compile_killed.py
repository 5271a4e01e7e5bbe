"""A compile killed with SIGKILL leaves no Prefect server behind (its temporary server dies with
it), and the active version serving."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from stores import open_store
from tests.conftest import EXAMPLES, ROOT

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

SERVER = "prefect.server.api.server:create_app"


def _children(pid: int) -> set[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return {int(c) for c in path.read_text().split()} if path.exists() else set()


def _is_prefect_server(pid: int) -> bool:
    try:
        return SERVER in Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    except OSError:
        return False


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _until(condition: object, what: str) -> None:
    deadline = time.monotonic() + 180  # a bound against a hang, not a speed target
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"no {what} in 180 s"
        time.sleep(0.1)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="needs Linux /proc")
def test_a_killed_compile_leaves_no_prefect_server(tmp_path: Path) -> None:
    store = f"sqlite:///{tmp_path / 'knowledge.db'}"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_API", "RAGC_"))} | {
        "PYTHONPATH": str(ROOT),
        "PREFECT_HOME": str(tmp_path / "prefect"),
    }
    compile_ = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "ragc",
            "compile",
            str(EXAMPLES),
            "--store",
            store,
            "--build-dir",
            str(tmp_path / "build"),
            "--publish",
            "--json",
        ],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    servers: list[int] = []

    def server_started() -> bool:
        assert compile_.poll() is None, "the compile ended before its Prefect server started"
        servers.extend(p for p in _children(compile_.pid) if _is_prefect_server(p))
        return bool(servers)

    try:
        _until(server_started, "temporary Prefect server")
        compile_.send_signal(signal.SIGKILL)
        compile_.wait()
        _until(lambda: not any(_alive(p) for p in servers), "exit of the orphaned server")
    finally:
        for pid in servers:
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
        if compile_.poll() is None:
            compile_.kill()
    opened = open_store(store)
    try:
        assert opened.active_version() is None  # killed before it published: nothing torn
    finally:
        opened.close()
