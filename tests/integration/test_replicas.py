"""Two `ragc serve` processes on one Redis: flips and rollbacks reach both within a second,
and no response ever mixes two versions. The replicas poll only every 5 s here, so meeting the
second proves the Redis pub/sub notification path."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from stores import open_store
from tests.conftest import REDIS_URL, ROOT, drop_redis_prefix, free_port, require_redis
from tests.factories import make_snapshot

pytestmark = pytest.mark.integration
QUESTION = "How long do I have to return a bike?"


def _ask(port: int) -> dict[str, object]:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/v1/answer",
        data=json.dumps({"question": QUESTION}).encode(),
        headers={"content-type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=5) as response:
        body: dict[str, object] = json.load(response)
        return body


def _wait_ready(port: int, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert process.poll() is None, "the server exited"
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.1)
    raise AssertionError("the server did not become ready")


@pytest.fixture
def store_url() -> Iterator[str]:
    require_redis()
    url = f"{REDIS_URL}?prefix=replicas-{uuid.uuid4().hex[:8]}"
    store = open_store(url)
    store.publish(make_snapshot("v1", answer="Version one: 30 days."), activate=True)
    store.publish(make_snapshot("v2", answer="Version two: 60 days."))
    store.close()
    yield url
    drop_redis_prefix(url)


@pytest.fixture
def replicas(store_url: str, tmp_path: Path) -> Iterator[list[int]]:
    ports = [free_port(), free_port()]
    env = {**os.environ, "RAGC_AUDIT": "0", "RAGC_POINTER_POLL_S": "5", "PYTHONPATH": str(ROOT)}
    processes = [
        subprocess.Popen(
            [sys.executable, "-m", "ragc", "serve", "--store", store_url, "--port", str(port)],
            cwd=tmp_path,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for port in ports
    ]
    try:
        for port, process in zip(ports, processes, strict=True):
            _wait_ready(port, process)
        yield ports
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            process.wait(timeout=20)


def _consistent(answer: dict[str, object]) -> bool:
    text, version = str(answer["answer"]), str(answer["version"])
    return text.startswith({"v1": "Version one", "v2": "Version two"}[version])


def _until_both(ports: list[int], version: str, seen: list[dict[str, object]]) -> float:
    started = time.monotonic()
    while True:
        answers = [_ask(port) for port in ports]
        seen.extend(answers)
        if all(a["version"] == version for a in answers):
            return time.monotonic() - started
        assert time.monotonic() - started < 1.0, f"{version} not seen by both within a second"


def test_a_flip_and_a_rollback_reach_both_replicas_within_a_second(
    store_url: str, replicas: list[int]
) -> None:
    seen: list[dict[str, object]] = []
    assert {_ask(port)["version"] for port in replicas} == {"v1"}

    store = open_store(store_url)
    try:
        store.activate("v2")
        flip = _until_both(replicas, "v2", seen)
        store.rollback()
        back = _until_both(replicas, "v1", seen)
    finally:
        store.close()

    assert flip < 1.0
    assert back < 1.0
    assert seen
    assert all(_consistent(answer) for answer in seen)
