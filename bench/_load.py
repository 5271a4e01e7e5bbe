"""Load generators for the serving benchmarks: wrk with a Lua script, or Python processes
driving keep-alive HTTP/1.1 connections; what they load (:class:`Target`) and measure
(:class:`Result`)."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import math
import multiprocessing as mp
import os
import re
import shutil
import signal
import subprocess
import time
from array import array
from collections.abc import Mapping, Sequence
from multiprocessing.synchronize import Barrier
from pathlib import Path
from typing import Any

from rich.console import Console

HOST = "127.0.0.1"
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


@dataclasses.dataclass(frozen=True)
class _Share:
    """One load process's part of a run."""

    port: int
    requests: list[bytes]
    count: int
    connections: int
    max_seconds: float


async def _drive(share: _Share, start: Barrier) -> tuple[int, int, bytes, int]:
    """Send ``count`` requests over ``connections`` keep-alive connections, one in flight each
    (cycling through ``requests``)."""
    port, requests, count, max_seconds = share.port, share.requests, share.count, share.max_seconds
    streams = [await asyncio.open_connection(HOST, port) for _ in range(share.connections)]
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


def _worker(share: _Share, start: Barrier, results: Any) -> None:
    try:
        import uvloop  # noqa: PLC0415 - in the load process only

        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            results.put(runner.run(_drive(share, start)))
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
            share = _Share(
                port=self.port,
                requests=requests,
                count=count // procs + (index < count % procs),
                connections=connections,
                max_seconds=max_seconds,
            )
            workers.append(
                context.Process(
                    target=_worker,
                    args=(share, start, results),
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


def find_wrk(install: bool) -> str | None:
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


def measure(
    load: LoadGenerator,
    targets: Sequence[Target],
    count: int,
    concurrency: int,
    max_seconds: float,
    rounds: int = 1,
) -> dict[str, Result]:
    """Each target warmed, then measured ``rounds`` times, interleaved with the others (so a
    burst of other work on the machine hits all of them); the median round by req/s counts."""
    return measure_servers({"": load}, targets, count, concurrency, max_seconds, rounds)[""]


def measure_servers(
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


def load_average() -> str:
    one, five, _ = os.getloadavg()
    return f"load average {one:.2f} (1 min), {five:.2f} (5 min) on {os.cpu_count()} cores"
