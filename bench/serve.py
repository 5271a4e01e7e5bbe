"""Serving benchmark: the answer service on granian against its own floor, one run.

    .venv/bin/python bench/serve.py [--requests N] [--concurrency C] [--rounds R] [--store URL]
                                    [--build-dir DIR] [--loadgen auto|wrk|python] [--install-wrk]
                                    [--encoder-batch N] [--encoder-window-ms MS] [--cold-only]

1. Compiles ``examples/`` into a temporary store (``--build-dir`` reuses a build cache), unless
   ``--store URL`` names a published one.
2. Starts granian in a subprocess on a free 127.0.0.1 port (one worker, uvloop) serving
   ``bench.serve_app:create_bench_app``: the real app plus ``GET /bench/constant``, a constant
   JSON body from a synchronous handler — the floor of this server and this framework.
3. Checks that each chosen question lands on the layer it stands for (L1 exact, L2 router,
   L3 topic block with the offline composer), then sends a fixed number of requests to each at
   one concurrency: req/s, p50 and p99. The floor and L1 are measured in ``--rounds``
   interleaved rounds and the median round is reported (the machine may be doing other work).
   Then every endpoint at a moderate concurrency (``--moderate``, 8) and at concurrency 1
   (latency without queueing), and the floor and L1 again
   on a second server with the audit log switched the other way.
4. A repeated L2/L3 question is routed once per version (the route memo), so the runs above
   measure the memo; L2 and L3 are measured again, at each concurrency, on servers started
   with ``RAGC_ROUTE_CACHE=0``, where every request runs the sentence encoder and the router
   ("cold"), each cycling through up to 16 distinct questions that land on its layer: one
   server batching the encoder across concurrent requests ("after": ``--encoder-batch`` 32,
   ``--encoder-window-ms`` 1) and one with batching off ("before": ``RAGC_ENCODER_BATCH=1``,
   the encoder inline; ``--no-compare-batching`` skips it). Both run at once and their runs
   are interleaved, so load from elsewhere hits both; a table gives after / before ratios and
   the mean encoder batch (from the server's ``ragc_encoder_batch_size`` metric).
   ``--cold-only`` measures only these.

The load generator is ``wrk`` with a Lua script (it stops each thread after its share of the
requests) when it is on the PATH — ``--install-wrk`` installs it with apt if it is missing —
else a Python one: two processes, each an asyncio loop driving keep-alive HTTP/1.1
connections with pre-encoded requests. Every request goes to 127.0.0.1; every measurement is
bounded in count and time; the server is stopped at the end, also on failure.

With ``--store`` and the audit log on, the audited answers are written to that store's file.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import math
import multiprocessing as mp
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from array import array
from collections.abc import Callable, Iterator, Mapping, Sequence
from multiprocessing.synchronize import Barrier
from pathlib import Path

# Run as a script, Python puts bench/ first on the path, where bench/stores.py would shadow
# the `stores` package: put the project root there instead.
if __package__ in (None, ""):
    sys.path[0] = str(Path(__file__).resolve().parent.parent)
from typing import Any, Literal

import httpx
from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"
APP = "bench.serve_app:create_bench_app"
CONSTANT_PATH = "/bench/constant"  # bench/serve_app.py
ANSWER_PATH = "/v1/answer"

L1_QUESTIONS = ("What's your return window?",)
L2_QUESTIONS = (
    "how long does the 500 wh battery take to charge from empty",
    "do you ship to norway",
    "how do I change my password",
)
L3_QUESTIONS = (
    "what happens to my data after I close my account",
    "what rights do I have over my data",
    "how should I store my battery over the winter",
    "how can I close my lumen account",
    "what data do you keep about me",
    "can I charge the battery overnight",
)

TARGET_L1_SHARE = 0.50
TARGET_L1_P99_MS = 2.0
TARGET_L2_P99_MS = 10.0
TARGET_BATCH_SPEEDUP = 2.0

console = Console(soft_wrap=True)


@dataclasses.dataclass(frozen=True)
class Target:
    """One endpoint to load: the floor or a question that lands on one layer."""

    name: str
    path: str
    question: str | None = None
    rotation: tuple[str, ...] = ()
    """More questions: the requests cycle through ``question`` and these."""

    @property
    def body(self) -> bytes | None:
        if self.question is None:
            return None
        return json.dumps({"question": self.question}).encode()

    @property
    def bodies(self) -> list[bytes]:
        """Every body the requests cycle through (none for a GET)."""
        if self.question is None:
            return []
        return [json.dumps({"question": q}).encode() for q in (self.question, *self.rotation)]

    def raw_request(self, port: int, body: bytes | None = None) -> bytes:
        """The whole HTTP/1.1 request, encoded once and sent as is."""
        body = self.body if body is None else body
        if body is None:
            return f"GET {self.path} HTTP/1.1\r\nHost: {HOST}:{port}\r\n\r\n".encode()
        head = (
            f"POST {self.path} HTTP/1.1\r\nHost: {HOST}:{port}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        )
        return head.encode() + body

    def raw_requests(self, port: int) -> list[bytes]:
        """One encoded request per body (just the one for a GET)."""
        return [self.raw_request(port, body) for body in self.bodies] or [self.raw_request(port)]


@dataclasses.dataclass(frozen=True)
class Result:
    name: str
    requests: int
    errors: int
    seconds: float
    p50_ms: float
    p99_ms: float
    concurrency: int
    rounds: int = 1
    """Rounds measured; the one with the median req/s is reported."""
    rps_low: float = 0.0
    rps_high: float = 0.0

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds > 0 else 0.0


def _percentile(ordered: Sequence[int], share: float) -> int:
    """Nearest-rank percentile of sorted values."""
    if not ordered:
        return 0
    return ordered[min(len(ordered) - 1, max(0, math.ceil(share * len(ordered)) - 1))]


# ---------------------------------------------------------------------------------------------
# Load generators
# ---------------------------------------------------------------------------------------------

_LUA = """
local quota = {quota}
local count = 0
wrk.method = "{method}"
{body}
{rotation}
function response(status, headers, body)
  count = count + 1
  if count == quota then
    io.write("DONE\\n")
    io.flush()
    wrk.thread:stop()
  end
end
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("RESULT %d %d %d %d %d %d\\n", summary.requests, summary.duration,
    latency:percentile(50), latency:percentile(99), e.status,
    e.connect + e.read + e.write + e.timeout))
end
"""


_LUA_ROTATION = """
local bodies = {{{bodies}}}
local requests = {{}}
local sent = 0
function init(args)
  for i, b in ipairs(bodies) do
    requests[i] = wrk.format(nil, nil, nil, b)
  end
end
function request()
  sent = sent % #requests + 1
  return requests[sent]
end
"""


def _lua_string(value: bytes) -> str:
    return '"' + "".join(f"\\{b}" for b in value) + '"'


class WrkLoad:
    """``wrk`` (one thread: the cores are the server's), stopped after a fixed count."""

    name = "wrk 1 thread + Lua (fixed request count)"

    def __init__(self, binary: str, port: int, workdir: Path) -> None:
        self.binary = binary
        self.port = port
        self.workdir = workdir

    def run(self, target: Target, count: int, concurrency: int, max_seconds: float) -> Result:
        body = target.body
        script = self.workdir / f"wrk-{target.name}.lua"
        setup = (
            f'wrk.body = {_lua_string(body)}\nwrk.headers["Content-Type"] = "application/json"'
            if body is not None
            else ""
        )
        bodies = target.bodies
        rotation = (
            _LUA_ROTATION.format(bodies=", ".join(_lua_string(b) for b in bodies))
            if len(bodies) > 1
            else ""
        )
        script.write_text(
            _LUA.format(
                quota=count, method="POST" if body else "GET", body=setup, rotation=rotation
            ),
            "utf-8",
        )
        command = [
            self.binary,
            "-t1",
            f"-c{concurrency}",
            f"-d{max(1, math.ceil(max_seconds))}s",
            "--timeout",
            "10s",
            "-s",
            str(script),
            f"http://{HOST}:{self.port}{target.path}",
        ]
        # wrk's main thread sleeps for -d whatever its threads do; the script prints DONE when
        # the quota is answered and SIGINT ends the sleep, so the duration is the run's own.
        errors = self.workdir / "wrk.err"
        lines: list[str] = []
        with errors.open("w") as err:
            process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=err, text=True)
            try:
                assert process.stdout is not None
                for line in process.stdout:  # ends by -d at the latest
                    lines.append(line)
                    if line.strip() == "DONE":
                        process.send_signal(signal.SIGINT)
                process.wait(timeout=30)
            finally:
                if process.poll() is None:
                    process.kill()
                    process.wait()
        out = "".join(lines)
        match = re.search(r"^RESULT (\d+) (\d+) (\d+) (\d+) (\d+) (\d+)$", out, re.M)
        if process.returncode != 0 or match is None:
            raise RuntimeError(f"wrk failed ({process.returncode}): {out}{errors.read_text()}")
        requests, micros, p50, p99, bad_status, socket_errors = (int(g) for g in match.groups())
        return Result(
            target.name,
            requests,
            bad_status + socket_errors,
            micros / 1e6,
            p50 / 1000,
            p99 / 1000,
            concurrency,
        )


def _content_length(head: bytes) -> int:
    lowered = head.lower()
    start = lowered.find(b"\r\ncontent-length:")
    if start < 0:
        if b"\r\ntransfer-encoding:" in lowered:
            raise RuntimeError("chunked response: the Python load generator reads Content-Length")
        return 0
    start += len(b"\r\ncontent-length:")
    return int(lowered[start : lowered.index(b"\r\n", start)])


async def _drive(
    port: int,
    requests: list[bytes],
    count: int,
    connections: int,
    max_seconds: float,
    start: Barrier,
) -> tuple[int, int, bytes, int]:
    """Send ``count`` requests over ``connections`` keep-alive connections, one in flight each
    (cycling through ``requests``)."""
    streams = [await asyncio.open_connection(HOST, port) for _ in range(connections)]
    start.wait(timeout=60)
    remaining = count
    errors = 0
    latencies = array("q")
    began = time.perf_counter_ns()
    deadline = began + int(max_seconds * 1e9)

    async def client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal remaining, errors
        clock = time.perf_counter_ns
        while remaining > 0 and clock() < deadline:
            remaining -= 1
            request = requests[remaining % len(requests)]
            sent = clock()
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            length = _content_length(head)
            if length:
                await reader.readexactly(length)
            latencies.append(clock() - sent)
            if head[9:12] != b"200":
                errors += 1

    async with asyncio.timeout(max_seconds + 30):
        await asyncio.gather(*(client(r, w) for r, w in streams))
    ended = time.perf_counter_ns()
    for _, writer in streams:
        writer.close()
    return began, ended, latencies.tobytes(), errors


def _worker(
    port: int,
    requests: list[bytes],
    count: int,
    connections: int,
    max_seconds: float,
    start: Barrier,
    results: Any,
) -> None:
    try:
        import uvloop  # noqa: PLC0415 - in the load process only

        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            results.put(runner.run(_drive(port, requests, count, connections, max_seconds, start)))
    except Exception as exc:  # noqa: BLE001 - the parent reports it and fails the run
        start.abort()
        results.put(f"{type(exc).__name__}: {exc}")


class PythonLoad:
    """Processes with an asyncio (uvloop) loop each, raw keep-alive HTTP/1.1 connections."""

    def __init__(self, port: int, processes: int = 2) -> None:
        self.port = port
        self.processes = processes
        self.name = f"Python: {processes} processes x uvloop, raw keep-alive HTTP/1.1"

    def run(self, target: Target, count: int, concurrency: int, max_seconds: float) -> Result:
        procs = max(1, min(self.processes, concurrency, count))
        context = mp.get_context("fork")
        start = context.Barrier(procs)
        results = context.Queue()
        requests = target.raw_requests(self.port)
        workers = []
        for index in range(procs):
            connections = concurrency // procs + (index < concurrency % procs)
            share = count // procs + (index < count % procs)
            workers.append(
                context.Process(
                    target=_worker,
                    args=(self.port, requests, share, connections, max_seconds, start, results),
                    daemon=True,
                )
            )
        for process in workers:
            process.start()
        outcomes = []
        try:
            outcomes = [results.get(timeout=max_seconds + 90) for _ in workers]
        finally:
            for process in workers:
                process.join(timeout=5)
                if process.is_alive():
                    process.terminate()
                    process.join()
        failed = [o for o in outcomes if isinstance(o, str)]
        if failed:
            raise RuntimeError(f"load generator failed: {failed[0]}")
        began = min(o[0] for o in outcomes)
        ended = max(o[1] for o in outcomes)
        latencies: list[int] = []
        for outcome in outcomes:
            chunk = array("q")
            chunk.frombytes(outcome[2])
            latencies.extend(chunk)
        latencies.sort()
        return Result(
            target.name,
            len(latencies),
            sum(o[3] for o in outcomes),
            (ended - began) / 1e9,
            _percentile(latencies, 0.50) / 1e6,
            _percentile(latencies, 0.99) / 1e6,
            concurrency,
        )


LoadGenerator = WrkLoad | PythonLoad


def _find_wrk(install: bool) -> str | None:
    found = shutil.which("wrk")
    if found or not install:
        return found
    apt = shutil.which("apt-get")
    if apt is None:
        console.print("[yellow]--install-wrk: no apt-get here[/]")
        return None
    console.print("installing wrk with apt-get ...")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install_cmd = [apt, "install", "-y", "-q", "wrk"]
    if subprocess.run(install_cmd, capture_output=True, env=env, check=False).returncode:
        subprocess.run([apt, "update", "-q"], capture_output=True, env=env, check=False)
        subprocess.run(install_cmd, capture_output=True, env=env, check=False)
    return shutil.which("wrk")


# ---------------------------------------------------------------------------------------------
# Store and server
# ---------------------------------------------------------------------------------------------


def _compile_examples(store_url: str, build_dir: Path) -> None:
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


class Server:
    """granian serving the bench app in its own process group."""

    def __init__(
        self,
        store_url: str,
        *,
        audit: bool,
        log_path: Path,
        route_cache: int | None = None,
        encoder_batch: int | None = None,
        encoder_window_ms: float | None = None,
    ) -> None:
        self.store_url = store_url
        self.audit = audit
        self.route_cache = route_cache
        self.encoder_batch = encoder_batch
        self.encoder_window_ms = encoder_window_ms
        self.log_path = log_path
        self.port = _free_port()
        self.base = f"http://{HOST}:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None

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
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                command,
                cwd=ROOT,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

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

    def log(self) -> str:
        return self.log_path.read_text("utf-8", errors="replace")[-4000:]

    def stop(self) -> None:
        process = self.process
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)

    @contextlib.contextmanager
    def running(self) -> Iterator[Server]:
        try:
            self.start()
            self.wait_ready()
            yield self
        finally:
            self.stop()


# ---------------------------------------------------------------------------------------------
# The run
# ---------------------------------------------------------------------------------------------

Layer = Literal["L1", "L2", "L3"]


def _choose(base: str, layer: Layer, candidates: Sequence[str]) -> Target | None:
    """The first candidate the running server answers on ``layer``; each one is printed."""
    with httpx.Client(base_url=base, timeout=30) as client:
        for question in candidates:
            response = client.post(ANSWER_PATH, json={"question": question})
            response.raise_for_status()
            answer = response.json()
            ok = answer["layer"] == layer
            mark = "[green]ok[/]" if ok else "[yellow]no[/]"
            console.print(
                f"  {layer} {mark} {question!r} -> layer {answer['layer']}, "
                f"confidence {answer['confidence']}, entry {answer['entry_id']}, "
                f"server {answer['latency_ms']} ms",
                highlight=False,
            )
            if ok:
                return Target(layer, ANSWER_PATH, question)
    console.print(f"  [red]no candidate question lands on {layer}[/]")
    return None


def _measure(
    load: LoadGenerator,
    targets: Sequence[Target],
    count: int,
    concurrency: int,
    max_seconds: float,
    rounds: int = 1,
) -> dict[str, Result]:
    """Each target warmed, then measured ``rounds`` times, interleaved with the others (so a
    burst of other work on the machine hits all of them); the median round by req/s counts."""
    return _measure_servers({"": load}, targets, count, concurrency, max_seconds, rounds)[""]


def _measure_servers(
    loads: Mapping[str, LoadGenerator],
    targets: Sequence[Target],
    count: int,
    concurrency: int,
    max_seconds: float,
    rounds: int = 1,
) -> dict[str, dict[str, Result]]:
    """:func:`_measure` on several servers (by tag), their rounds interleaved too."""
    runs: dict[tuple[str, str], list[Result]] = {
        (tag, t.name): [] for tag in loads for t in targets
    }
    for load in loads.values():
        for target in targets:
            load.run(target, min(count, max(50, count // 10)), concurrency, max_seconds)
    for index in range(rounds):
        for tag, load in loads.items():
            for target in targets:
                result = load.run(target, count, concurrency, max_seconds)
                runs[tag, target.name].append(result)
                console.print(
                    f"  {tag + ' ' if tag else ''}{target.name:<6} c={concurrency:<3} "
                    f"round {index + 1}/{rounds} "
                    f"{result.requests:>6} req {result.rps:>9,.0f} req/s  "
                    f"p50 {result.p50_ms:.2f} ms  p99 {result.p99_ms:.2f} ms"
                    + (f"  [red]{result.errors} errors[/]" if result.errors else ""),
                    highlight=False,
                )
    chosen: dict[str, dict[str, Result]] = {tag: {} for tag in loads}
    for (tag, name), results in runs.items():
        ordered = sorted(results, key=lambda r: r.rps)
        median = ordered[len(ordered) // 2]
        chosen[tag][name] = dataclasses.replace(
            median, rounds=len(ordered), rps_low=ordered[0].rps, rps_high=ordered[-1].rps
        )
    return chosen


def _results_table(title: str, results: Sequence[Result], floor: Result | None) -> Table:
    table = Table(title=title)
    columns = ("endpoint", "requests", "req/s", "rounds: min-max", "p50 ms", "p99 ms", "vs floor")
    for column in columns:
        table.add_column(column, justify="left" if column == "endpoint" else "right")
    for result in results:
        failed = f" ([red]{result.errors} failed[/])" if result.errors else ""
        spread = (
            f"{result.rounds}: {result.rps_low:,.0f}-{result.rps_high:,.0f}"
            if result.rounds > 1
            else "1"
        )
        table.add_row(
            result.name,
            f"{result.requests:,}{failed}",
            f"{result.rps:,.0f}",
            spread,
            f"{result.p50_ms:.2f}",
            f"{result.p99_ms:.2f}",
            f"{result.rps / floor.rps:.1%}" if floor and floor.rps else "-",
        )
    return table


def _targets_table(
    loaded: dict[str, Result],
    idle: dict[str, Result],
    cold: dict[str, Result],
    moderate: dict[str, Result],
) -> Table:
    table = Table(title="Targets of the serving issue")
    for column in ("target", "measured", "result"):
        table.add_column(column)

    def verdict(ok: bool) -> str:
        return "[green]met[/]" if ok else "[red]missed[/]"

    l1 = loaded.get("L1")
    for floor_name, label in (("floor", "GET floor"), ("POST floor", "POST floor, same body")):
        floor = loaded.get(floor_name)
        if floor and l1:
            share = l1.rps / floor.rps
            table.add_row(
                f"L1 throughput >= {TARGET_L1_SHARE:.0%} of the {label}",
                f"{share:.1%} ({l1.rps:,.0f} / {floor.rps:,.0f} req/s)",
                verdict(share >= TARGET_L1_SHARE),
            )
    runs_by_label = (("saturated", loaded), ("moderate load", moderate), ("concurrency 1", idle))
    for name, limit in (("L1", TARGET_L1_P99_MS), ("L2", TARGET_L2_P99_MS), ("L2 cold", 10.0)):
        for label, runs in runs_by_label:
            result = runs.get(name) if name != "L2 cold" else cold.get(f"L2 cold {label}")
            if result is not None:
                table.add_row(
                    f"{name} p99 <= {limit:g} ms ({label}, c={result.concurrency})",
                    f"{result.p99_ms:.2f} ms",
                    verdict(result.p99_ms <= limit),
                )
    return table


def _audit_table(audit: bool, first: dict[str, Result], second: dict[str, Result]) -> Table:
    table = Table(title="L1 with the audit log on and off (one server each, each its own floor)")
    for column in (
        "RAGC_AUDIT",
        "floor req/s",
        "L1 req/s",
        "L1 vs floor",
        "L1 p50 ms",
        "L1 p99 ms",
    ):
        table.add_column(column, justify="right")
    rows = ((audit, first), (not audit, second))
    for flag, runs in sorted(rows, key=lambda row: not row[0]):
        floor, l1 = runs.get("floor"), runs.get("L1")
        if floor is None or l1 is None:
            continue
        table.add_row(
            "1" if flag else "0",
            f"{floor.rps:,.0f}",
            f"{l1.rps:,.0f}",
            f"{l1.rps / floor.rps:.1%}",
            f"{l1.p50_ms:.2f}",
            f"{l1.p99_ms:.2f}",
        )
    return table


def _load_average() -> str:
    one, five, _ = os.getloadavg()
    return f"load average {one:.2f} (1 min), {five:.2f} (5 min) on {os.cpu_count()} cores"


ROTATION = 16
"""Distinct questions a cold target cycles through at most."""
COLD_LEVELS = ("saturated", "moderate load", "concurrency 1")


def _example_queries() -> tuple[str, ...]:
    """The labelled questions of ``examples/queries.jsonl`` (candidates for the cold runs)."""
    path = ROOT / "examples" / "queries.jsonl"
    if not path.is_file():
        return ()
    lines = path.read_text("utf-8").splitlines()
    return tuple(str(json.loads(line)["query"]) for line in lines if line.strip())


def _rotating(base: str, target: Target, candidates: Sequence[str]) -> Target:
    """``target`` cycling through up to :data:`ROTATION` candidates that land on its layer:
    distinct texts of various lengths, so an encoder batch is padded as real traffic pads it."""
    found: list[str] = []
    with httpx.Client(base_url=base, timeout=30) as client:
        for question in dict.fromkeys(candidates):
            if len(found) + 1 >= ROTATION:
                break
            if question == target.question:
                continue
            response = client.post(ANSWER_PATH, json={"question": question})
            response.raise_for_status()
            if response.json()["layer"] == target.name:
                found.append(question)
    console.print(
        f"  {target.name} cold runs cycle through {len(found) + 1} questions on {target.name}",
        highlight=False,
    )
    return dataclasses.replace(target, rotation=tuple(found))


def _batch_sizes(base: str) -> tuple[float, float]:
    """Sum and count of the server's ``ragc_encoder_batch_size`` histogram."""
    text = httpx.get(f"{base}/metrics", timeout=30).text
    found = {"sum": 0.0, "count": 0.0}
    for line in text.splitlines():
        for part in found:
            if line.startswith(f"ragc_encoder_batch_size_{part} "):
                found[part] = float(line.split()[-1])
    return found["sum"], found["count"]


def _measure_cold(
    args: argparse.Namespace,
    store_url: str,
    work: Path,
    targets: Sequence[Target],
    generator: Callable[[int], LoadGenerator],
) -> tuple[dict[str, Result], dict[str, Result], dict[str, float]]:
    """The cold targets (route memo off: every request runs the encoder) at each concurrency,
    on a server with encoder batching on ("after") and, with ``--compare-batching``, one with
    it off (``RAGC_ENCODER_BATCH=1``, "before"), both running, their rounds interleaved.

    Returns the after and before results by ``"{name} cold {level}"`` and the after server's
    mean encoder batch at each level."""
    after = Server(
        store_url,
        audit=args.audit,
        log_path=work / "granian-after.log",
        route_cache=0,
        encoder_batch=args.encoder_batch,
        encoder_window_ms=args.encoder_window_ms,
    )
    servers = {"after": after}
    if args.compare_batching:
        servers["before"] = Server(
            store_url,
            audit=args.audit,
            log_path=work / "granian-before.log",
            route_cache=0,
            encoder_batch=1,
        )
    levels = [("saturated", args.concurrency, args.slow_requests)]
    if args.moderate:
        levels.append(("moderate load", args.moderate, args.slow_requests))
    levels.append(("concurrency 1", 1, args.latency_requests or args.slow_requests))
    runs: dict[str, dict[str, Result]] = {tag: {} for tag in servers}
    mean_batch: dict[str, float] = {}
    with contextlib.ExitStack() as stack:
        for server in servers.values():
            stack.enter_context(server.running())
        console.print(
            "L2 and L3 again with the route memo off (RAGC_ROUTE_CACHE=0), encoder batching "
            f"on (after: RAGC_ENCODER_BATCH={args.encoder_batch}, "
            f"RAGC_ENCODER_WINDOW_MS={args.encoder_window_ms:g})"
            + (" and off (before: RAGC_ENCODER_BATCH=1)" if args.compare_batching else "")
            + f"; {_load_average()}:"
        )
        order = [tag for tag in ("before", "after") if tag in servers]
        loads: dict[str, LoadGenerator] = {tag: generator(servers[tag].port) for tag in order}
        for label, concurrency, count in levels:
            texts, calls = _batch_sizes(after.base)
            measured = _measure_servers(
                loads, targets, count, concurrency, args.max_seconds, args.cold_rounds
            )
            more_texts, more_calls = _batch_sizes(after.base)
            if more_calls > calls:
                mean_batch[label] = (more_texts - texts) / (more_calls - calls)
            for tag, results in measured.items():
                for name, result in results.items():
                    runs[tag][f"{name} cold {label}"] = dataclasses.replace(
                        result, name=f"{name} cold, c={concurrency}"
                    )
    return runs["after"], runs.get("before", {}), mean_batch


def _batching_table(
    args: argparse.Namespace,
    before: dict[str, Result],
    after: dict[str, Result],
    mean_batch: dict[str, float],
) -> Table:
    table = Table(
        title="Encoder batching, route memo off: before = RAGC_ENCODER_BATCH=1 (inline), "
        f"after = {args.encoder_batch} with a {args.encoder_window_ms:g} ms window"
    )
    columns = (
        "endpoint",
        "req/s before",
        "req/s after",
        "after / before",
        "p50 ms before",
        "p50 ms after",
        "p99 ms before",
        "p99 ms after",
        "p99 after / before",
        "mean batch",
    )
    for column in columns:
        table.add_column(column, justify="left" if column == "endpoint" else "right")
    for key, new in after.items():
        old = before.get(key)
        if old is None:
            continue
        level = next((label for label in COLD_LEVELS if key.endswith(label)), "")
        batch = mean_batch.get(level)
        table.add_row(
            new.name,
            f"{old.rps:,.0f}",
            f"{new.rps:,.0f}",
            f"{new.rps / old.rps:.2f}x" if old.rps else "-",
            f"{old.p50_ms:.2f}",
            f"{new.p50_ms:.2f}",
            f"{old.p99_ms:.2f}",
            f"{new.p99_ms:.2f}",
            f"{new.p99_ms / old.p99_ms:.2f}x" if old.p99_ms else "-",
            f"{batch:.1f}" if batch is not None else "-",
        )
    return table


def _batching_targets(
    args: argparse.Namespace, before: dict[str, Result], after: dict[str, Result]
) -> Table:
    table = Table(title="Targets of encoder batching (issue 13 part 4)")
    for column in ("target", "measured", "result"):
        table.add_column(column)

    def verdict(ok: bool) -> str:
        return "[green]met[/]" if ok else "[red]missed[/]"

    old, new = before.get("L2 cold saturated"), after.get("L2 cold saturated")
    if old and new and old.rps:
        ratio = new.rps / old.rps
        table.add_row(
            f"cold L2 req/s at c={new.concurrency} >= {TARGET_BATCH_SPEEDUP:g}x batching off",
            f"{ratio:.2f}x ({new.rps:,.0f} / {old.rps:,.0f} req/s)",
            verdict(ratio >= TARGET_BATCH_SPEEDUP),
        )
    old, new = before.get("L2 cold concurrency 1"), after.get("L2 cold concurrency 1")
    if old and new:
        limit = old.p99_ms + args.encoder_window_ms
        table.add_row(
            f"cold L2 p99 at c=1 <= batching off + the {args.encoder_window_ms:g} ms window",
            f"{new.p99_ms:.2f} ms (limit {limit:.2f} ms)",
            verdict(new.p99_ms <= limit),
        )
    return table


def run(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="ragc-serve-bench-") as tmp:
        work = Path(tmp)
        store_url = args.store
        if not store_url:
            store_url = f"sqlite:///{work / 'knowledge.db'}"
            build_dir = Path(args.build_dir) if args.build_dir else work / "build"
            _compile_examples(store_url, build_dir)
        elif args.audit:
            console.print(f"[yellow]audit on: audited answers are written to {store_url}[/]")

        wrk = None if args.loadgen == "python" else _find_wrk(args.install_wrk)
        if args.loadgen == "wrk" and wrk is None:
            raise SystemExit("--loadgen wrk: wrk is not on the PATH (try --install-wrk)")

        def generator(port: int) -> LoadGenerator:
            return WrkLoad(wrk, port, work) if wrk else PythonLoad(port)

        loaded: dict[str, Result] = {}
        idle: dict[str, Result] = {}
        moderate: dict[str, Result] = {}
        flipped_runs: dict[str, Result] = {}
        cold: dict[str, Result] = {}
        cold_before: dict[str, Result] = {}
        cold_targets: list[Target] = []
        mean_batch: dict[str, float] = {}
        server = Server(store_url, audit=args.audit, log_path=work / "granian.log")
        with server.running():
            load = generator(server.port)
            console.print(f"before measuring: {_load_average()}")
            console.print(
                f"granian on {server.base} (1 worker, uvloop), audit "
                f"{'on' if args.audit else 'off'}; load generator: {load.name}"
            )
            console.print("questions (each asked once; the first on its layer is used):")
            targets = [Target("floor", CONSTANT_PATH)]
            questions: tuple[tuple[Layer, str, Sequence[str]], ...] = (
                ("L1", args.l1_question, L1_QUESTIONS),
                ("L2", args.l2_question, L2_QUESTIONS),
                ("L3", args.l3_question, L3_QUESTIONS),
            )
            for layer, given, defaults in questions:
                chosen = _choose(server.base, layer, (given,) if given else defaults)
                if chosen is not None:
                    targets.append(chosen)
            if not any(t.name == "L1" for t in targets):
                raise SystemExit("no L1 question: pass one with --l1-question")
            l1_question = next(t.question for t in targets if t.name == "L1")
            targets.insert(1, Target("POST floor", CONSTANT_PATH, l1_question))
            fast = [t for t in targets if t.name in ("floor", "POST floor", "L1")]
            slow = [t for t in targets if t.name not in ("floor", "POST floor", "L1")]
            if args.compare_memo and slow:
                examples = _example_queries()
                cold_targets = [
                    _rotating(server.base, t, (*L2_QUESTIONS, *L3_QUESTIONS, *examples))
                    for t in slow
                ]
            if not args.cold_only:
                console.print(f"measuring at concurrency {args.concurrency}:")
                loaded.update(
                    _measure(
                        load, fast, args.requests, args.concurrency, args.max_seconds, args.rounds
                    )
                )
                loaded.update(
                    _measure(load, slow, args.slow_requests, args.concurrency, args.max_seconds)
                )
                if args.moderate:
                    console.print(f"measuring at concurrency {args.moderate}:")
                    moderate.update(
                        _measure(load, targets, args.slow_requests, args.moderate, args.max_seconds)
                    )
                if args.latency_requests:
                    console.print("measuring at concurrency 1:")
                    idle.update(_measure(load, targets, args.latency_requests, 1, args.max_seconds))
        load_name = load.name
        if args.compare_audit and not args.cold_only:
            other = Server(store_url, audit=not args.audit, log_path=work / "granian-2.log")
            with other.running():
                console.print(f"floor and L1 again, audit {'off' if args.audit else 'on'}:")
                load = generator(other.port)
                flipped_runs = _measure(
                    load, fast, args.requests, args.concurrency, args.max_seconds, args.rounds
                )
        if cold_targets:
            cold, cold_before, mean_batch = _measure_cold(
                args, store_url, work, cold_targets, generator
            )

    audit_label = "on" if args.audit else "off"
    for title, runs in (
        (
            f"Answer service on granian, concurrency {args.concurrency} (audit {audit_label})",
            loaded,
        ),
        (f"Concurrency {args.moderate}: moderate load", moderate),
        ("Concurrency 1: latency without queueing", idle),
    ):
        if runs:
            console.print(_results_table(title, list(runs.values()), runs.get("floor")))
    if flipped_runs:
        console.print(_audit_table(args.audit, loaded, flipped_runs))
    if cold:
        window = f"{args.encoder_window_ms:g} ms window"
        console.print(
            _results_table(
                "Route memo off: every request runs the encoder and the router "
                f"(RAGC_ENCODER_BATCH={args.encoder_batch}, {window})",
                list(cold.values()),
                None,
            )
        )
    if cold_before:
        # Ten columns: wider than the default 80 a pipe gets, and unreadable squeezed into it.
        Console(soft_wrap=True, width=max(console.width, 150)).print(
            _batching_table(args, cold_before, cold, mean_batch)
        )
    console.print(_targets_table(loaded, idle, cold, moderate))
    if cold_before:
        console.print(_batching_targets(args, cold_before, cold))
    console.print(f"load generator: {load_name}; server: granian, 1 worker, uvloop, HTTP/1.1")
    console.print(f"after measuring: {_load_average()} (other work on the machine skews the run)")


def _terminate(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--requests", type=int, default=20_000, help="per floor / L1 run")
    parser.add_argument("--slow-requests", type=int, default=5_000, help="per L2 / L3 run")
    parser.add_argument(
        "--latency-requests",
        type=int,
        default=1_000,
        help="per endpoint at concurrency 1 (0 skips)",
    )
    parser.add_argument("--concurrency", type=int, default=32, help="the saturating load")
    parser.add_argument(
        "--moderate", type=int, default=8, help="a second, moderate concurrency (0 skips)"
    )
    parser.add_argument(
        "--rounds", type=int, default=3, help="interleaved floor / L1 rounds (median counts)"
    )
    parser.add_argument("--max-seconds", type=float, default=120.0, help="bound of each run")
    parser.add_argument("--store", default="", help="a published store (default: compile one)")
    parser.add_argument("--build-dir", default="", help="build cache to reuse for the compile")
    parser.add_argument("--loadgen", choices=("auto", "wrk", "python"), default="auto")
    parser.add_argument("--install-wrk", action="store_true", help="apt-get install wrk")
    parser.add_argument(
        "--audit",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="RAGC_AUDIT of the main server (default on, as served)",
    )
    parser.add_argument(
        "--compare-audit",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="measure L1 again on a server with the audit log flipped",
    )
    parser.add_argument(
        "--compare-memo",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="measure L2 and L3 again on a server with the route memo off",
    )
    parser.add_argument(
        "--compare-batching",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="in the memo-off runs, also measure a server with encoder batching off",
    )
    parser.add_argument(
        "--encoder-batch", type=int, default=32, help="RAGC_ENCODER_BATCH of the batching server"
    )
    parser.add_argument(
        "--encoder-window-ms",
        type=float,
        default=1.0,
        help="RAGC_ENCODER_WINDOW_MS of the batching server",
    )
    parser.add_argument(
        "--cold-rounds",
        type=int,
        default=1,
        help="interleaved memo-off rounds per concurrency (median counts)",
    )
    parser.add_argument(
        "--cold-only",
        action="store_true",
        help="only the memo-off runs (the first server just picks the questions)",
    )
    parser.add_argument("--l1-question", default="")
    parser.add_argument("--l2-question", default="")
    parser.add_argument("--l3-question", default="")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, _terminate)  # so the server is stopped on a kill, too
    if (
        min(args.requests, args.slow_requests, args.concurrency, args.rounds, args.cold_rounds) < 1
        or args.encoder_batch < 1
        or args.latency_requests < 0
    ):
        parser.error(
            "--requests, --slow-requests, --concurrency, --rounds, --cold-rounds and "
            "--encoder-batch must be >= 1"
        )
    run(args)


if __name__ == "__main__":
    main()
