"""Fault and load scenarios: the service survives what operators see, and this proves it.

    .venv/bin/python bench/faults.py [--only NAME ...] [--flips N] [--build-dir DIR]

Each scenario runs ``ragc serve`` (the command users run) in a subprocess on a free loopback
port, against servers it starts itself where it needs them (Redis, PostgreSQL: own folders,
own ports, stopped by PID; the machine's shared ones are never touched), is bounded in count
and time, and stops everything it started. The examples are compiled once; further versions
are the same snapshot under new labels. A table at the end has one row per scenario, with the
figure measured, its target and PASS or FAIL; the exit status is 1 if any failed.

Scenarios: ``flips`` (worker memory after N publish+activate cycles, beyond the first load),
``versions`` (six versions in use at once: stable, canary, four pins, under load, against one),
``redis`` (the store's Redis flushed, then the version published again), ``worker`` (one of two
workers killed with SIGKILL under load), ``postgres`` (the warm tier's server stopped, then
started), ``publisher`` (a publisher killed with SIGKILL mid-load), ``bad-input`` (a corpus of
malformed requests, and bodies that never finish).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx
import redis

from bench._backends import HOST, PostgresServer, RedisServer, wait_for
from bench._load import PythonLoad, Target, console, measure_servers
from bench._server import ROOT, compile_examples
from bench._service import Service, relabel
from schemas.manifest import Snapshot
from stores import open_store
from stores.postgres import migrate

L1 = "What's your return window?"
QUESTIONS = (
    L1,
    "how long does the 500 wh battery take to charge from empty",
    "charging the battery in cold weather",
    "who won the world cup in 1998",
)


@dataclasses.dataclass(frozen=True)
class Row:
    scenario: str
    measured: str
    target: str
    passed: bool


@dataclasses.dataclass
class Run:
    work: Path
    store: str
    """The compiled examples (a SQLite store); scenarios copy what they change."""
    flips: int
    requests: int

    def fresh_store(self, name: str) -> str:
        """A copy of the compiled store for one scenario."""
        target = self.work / f"{name}.db"
        source = sqlite3.connect(self.store.removeprefix("sqlite:///"))
        copy = sqlite3.connect(target)
        source.backup(copy)
        source.close()
        copy.close()
        return f"sqlite:///{target}"

    def service(self, store: str, name: str, **kw: object) -> Service:
        return Service(store=store, log_path=self.work / f"{name}.log", **kw)  # type: ignore[arg-type]


def _base(run: Run) -> Snapshot:
    store = open_store(run.store)
    try:
        return store.load(store.active_version() or "")
    finally:
        store.close()


def scenario_flips(run: Run) -> Row:
    """Publish and activate ``--flips`` versions while the service answers; worker RSS growth
    beyond the first load."""
    store_url = run.fresh_store("flips")
    store = open_store(store_url)
    base = store.load(store.active_version() or "")
    service = run.service(store_url, "flips", env={"RAGC_AUDIT": "0"})
    with service.running():
        for question in QUESTIONS:
            service.ask(question)
        first = service.rss_mb()
        for index in range(run.flips):
            label = f"f{index + 1}"
            store.publish(relabel(base, label), activate=True)
            service.wait_ready(label)
            for question in QUESTIONS:
                service.ask(question)
        last = service.rss_mb()
        store.gc(keep=3)
    store.close()
    growth = last - first
    return Row(
        "flips",
        f"{run.flips} flips: RSS {first:.0f} -> {last:.0f} MB ({growth:+.1f} MB)",
        "growth <= 10 MB",
        growth <= 10.0,
    )


@dataclasses.dataclass(frozen=True)
class _Bodies(Target):
    """A load target whose requests cycle through given JSON bodies."""

    payloads: tuple[dict[str, str], ...] = ()

    @property
    def bodies(self) -> list[bytes]:
        return [json.dumps(p).encode() for p in self.payloads]


def scenario_versions(run: Run) -> Row:
    """Six versions in use at once (stable, a 50 % canary, four pinned tenants) under load,
    against one version in use: two services side by side, their load rounds interleaved (so a
    burst of other work hits both), the median round of each compared."""
    one_url, six_url = run.fresh_store("one-version"), run.fresh_store("six-versions")
    store = open_store(six_url)
    base = store.load(store.active_version() or "")
    labels = [f"m{i}" for i in range(2, 7)]
    for label in labels:
        store.publish(relabel(base, label))
    tenants = ("t1", "t2", "t3", "t4")
    store.rollout(labels[0], 50)
    for tenant, label in zip(tenants, labels[1:], strict=True):
        store.pin(tenant, label)
    store.close()
    env = {"RAGC_AUDIT": "0", "RAGC_TENANT_AUTH": "trust"}  # pins by the body's tenant
    mixed = tuple(
        {"question": L1, "session": f"s{i}"} if i % 5 == 4 else {"question": L1, "tenant": t}
        for i, t in enumerate(tenants * 5)
    )
    target = _Bodies("mixed", "/v1/answer", L1, payloads=mixed)
    one = run.service(one_url, "one-version", env=env)
    six = run.service(six_url, "six-versions", env=env)
    with one.running(), six.running():
        loads = {"one": PythonLoad(one.port), "six": PythonLoad(six.port)}
        results = measure_servers(loads, [target], run.requests, 16, 120, rounds=3)
        with httpx.Client(base_url=six.base, timeout=30) as client:
            seen = {client.post("/v1/answer", json=p).json()["version"] for p in mixed}
        ready = six.get("/readyz")
    rps_one, rps_six = results["one"]["mixed"].rps, results["six"]["mixed"].rps
    errors = results["one"]["mixed"].errors + results["six"]["mixed"].errors
    ratio = rps_six / rps_one
    ok = ratio >= 0.8 and ready.status_code == 200 and len(seen) == 6 and errors == 0
    return Row(
        "versions",
        f"{rps_one:,.0f} -> {rps_six:,.0f} req/s ({ratio:.2f}x, median of 3 interleaved "
        f"rounds), {len(seen)} versions answering, {errors} errors, /readyz {ready.status_code}",
        ">= 0.80x, /readyz 200",
        ok,
    )


def scenario_redis(run: Run) -> Row:
    """The store's Redis flushed under a running replica, then the version published again."""
    base = _base(run)
    redis_server = RedisServer()
    redis_server.start()
    try:
        store = open_store(redis_server.url)
        store.publish(relabel(base, "r1"), activate=True)
        service = run.service(redis_server.url, "redis", env={"RAGC_AUDIT": "0"})
        with service.running():
            client = redis.Redis.from_url(redis_server.url)
            client.flushall()
            client.close()
            wait_for(
                lambda: service.get("/readyz").json()["status"] == "degraded",
                timeout=30,
                what="degraded readiness",
            )
            answered = sum(service.ask(q).status_code == 200 for q in QUESTIONS * 50)
            degraded = service.get("/readyz")
            started = time.monotonic()
            store.publish(relabel(base, "r2"), activate=True)
            service.wait_ready("r2")
            healed = time.monotonic() - started
            status = service.get("/readyz").json()["status"]
        store.close()
    finally:
        redis_server.close()
    total = len(QUESTIONS) * 50
    ok = answered == total and degraded.status_code == 200 and status == "ready"
    return Row(
        "redis",
        f"flushed: {answered}/{total} answered, /readyz {degraded.status_code} "
        f"{degraded.json()['status']}; republished: {status} in {healed:.1f} s",
        "all answered, degraded not down, ready again",
        ok,
    )


def scenario_worker(run: Run) -> Row:
    """One of two workers killed with SIGKILL while a client keeps asking."""
    service = run.service(run.fresh_store("worker"), "worker", workers=2, env={"RAGC_AUDIT": "0"})
    outcomes: list[bool] = []
    stop = threading.Event()

    def keep_asking() -> None:
        with httpx.Client(base_url=service.base, timeout=10) as client:
            while not stop.is_set():
                try:
                    outcomes.append(client.post("/v1/answer", json={"question": L1}).is_success)
                except httpx.HTTPError:
                    outcomes.append(False)

    with service.running():
        wait_for(lambda: len(service.workers_now()) == 2, timeout=60, what="two workers")
        first = service.workers_now()
        asker = threading.Thread(target=keep_asking)
        asker.start()
        wait_for(lambda: len(outcomes) > 200, timeout=60, what="answers before the kill")
        os.kill(min(first), signal.SIGKILL)
        started = time.monotonic()
        wait_for(
            lambda: len(service.workers_now() - first) == 1 and len(service.workers_now()) == 2,
            timeout=60,
            what="a respawned worker",
        )
        respawned = time.monotonic() - started
        count = len(outcomes)
        wait_for(lambda: len(outcomes) > count + 200, timeout=60, what="answers after")
        stop.set()
        asker.join()
        alive = service.process is not None and service.process.poll() is None
    failed = outcomes.count(False)
    ok = alive and failed <= 2
    return Row(
        "worker",
        f"{failed} of {len(outcomes)} requests failed; respawned in {respawned:.1f} s",
        "server up, <= 2 failed (in flight on the killed worker)",
        ok,
    )


def scenario_postgres(run: Run) -> Row:
    """The warm tier's Postgres stopped while the service answers, then started again."""
    postgres = PostgresServer()
    try:
        postgres.start()
        migrate(postgres.dsn)
        env = {"RAGC_WARM_DSN": postgres.dsn, "RAGC_AUDIT": "1"}
        service = run.service(run.fresh_store("postgres"), "postgres", env=env)
        admin = {"Authorization": "Bearer faults"}

        def missed(question: str) -> bool:
            response = service.get("/v1/misses?limit=1000", headers=admin)
            return response.status_code == 200 and any(
                m["example"] == question for m in response.json()["misses"]
            )

        with service.running():
            service.ask("question before the outage zzz")
            wait_for(lambda: missed("question before the outage zzz"), timeout=30, what="audit")
            postgres.stop()
            latencies = []
            codes = []
            for index in range(200):
                began = time.perf_counter()
                codes.append(service.ask(f"question during the outage {index}").status_code)
                latencies.append(time.perf_counter() - began)
            began = time.perf_counter()
            first = service.get("/v1/misses", headers=admin).status_code
            first_s = time.perf_counter() - began
            began = time.perf_counter()
            second = service.get("/v1/misses", headers=admin).status_code
            second_s = time.perf_counter() - began
            postgres.start()
            back = time.monotonic()
            service.ask("question after the outage zzz")
            wait_for(
                lambda: (
                    missed("question after the outage zzz")
                    and missed("question during the outage 199")
                ),
                timeout=120,
                what="audit writes after the restart",
            )
            resumed = time.monotonic() - back
    finally:
        postgres.close()
    answered = codes.count(200)
    worst = max(latencies) * 1000
    ok = answered == len(codes) and first == 503 and first_s <= 5 and resumed <= 5
    return Row(
        "postgres",
        f"down: {answered}/{len(codes)} answered (slowest {worst:.0f} ms), /v1/misses {first} "
        f"in {first_s:.1f} s then {second} in {second_s:.2f} s; up: audit resumed in "
        f"{resumed:.1f} s",
        "all answered, 503 in <= 5 s, resumed in <= 5 s",
        ok,
    )


_BIG_PUBLISH = """
import sys
import msgspec
from bench._service import relabel
from schemas.records import ExactAnswer
from stores import open_store
store = open_store(sys.argv[1])
base = store.load(store.active_version())
fill = tuple(ExactAnswer(id=f"f.{i}", question=f"Filler question {i}?", answer=f"A{i}")
             for i in range(int(sys.argv[3])))
big = msgspec.structs.replace(relabel(base, sys.argv[2]), exact=base.exact + fill).sealed()
store.publish(big, activate=True)
"""


def scenario_publisher(run: Run) -> Row:
    """A publisher killed with SIGKILL mid-load: the active version serves on, ``gc`` removes
    the partial load once its heartbeat has stopped, and the label publishes again."""
    store_url = run.fresh_store("publisher")
    service = run.service(store_url, "publisher", env={"RAGC_AUDIT": "0"})
    path = store_url.removeprefix("sqlite:///")

    def loading() -> bool:
        db = sqlite3.connect(path)
        try:
            row = db.execute("SELECT state FROM versions WHERE version = 'p2'").fetchone()
        finally:
            db.close()
        return row is not None and row[0] == "loading"

    with service.running():
        active = service.get("/readyz").json()["version"]
        publisher = subprocess.Popen(
            [sys.executable, "-c", _BIG_PUBLISH, store_url, "p2", "400000"],
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
        wait_for(loading, timeout=120, what="the big publish loading")
        publisher.send_signal(signal.SIGKILL)
        publisher.wait()
        serving = service.get("/readyz").json()["version"]
        answered = service.ask(L1).status_code
        store = open_store(store_url)
        fresh = store.gc(keep=5).partial_removed
        started = time.monotonic()
        removed: tuple[str, ...] = ()
        while not removed:
            removed = store.gc(keep=5, partial_grace_s=2.0).partial_removed
            if time.monotonic() - started > 60:
                break
            time.sleep(0.2)
        collected = time.monotonic() - started
        store.publish(relabel(store.load(active), "p2"), activate=True)
        service.wait_ready("p2")
        store.close()
    ok = serving == active and answered == 200 and fresh == () and removed == ("p2",)
    return Row(
        "publisher",
        f"killed mid-load: still serving {serving} ({answered}); gc kept the fresh partial, "
        f"removed it {collected:.1f} s later (grace 2 s); p2 published again",
        "active serves, partial removed, label reusable",
        ok,
    )


BadInput = tuple[str, str, str, dict[str, str], bytes]
"""Name, method, path, headers, body."""
_JSON = {"content-type": "application/json"}
_ADMIN = {"Authorization": "Bearer faults", **_JSON}
NESTED = b"[" * 1000 + b"]" * 1000
BATCH_101 = json.dumps({"questions": [{"question": "hi"}] * 101}).encode()


def _answer(name: str, body: bytes, headers: dict[str, str] | None = None) -> BadInput:
    """A bad ``POST /v1/answer``."""
    return (name, "POST", "/v1/answer", _JSON if headers is None else headers, body)


BAD_INPUTS: tuple[BadInput, ...] = (
    _answer("empty body", b""),
    _answer("not JSON", b"question=hi"),
    _answer("truncated JSON", b'{"question": '),
    _answer("invalid UTF-8", b'{"question": "caf\xe9"}'),
    _answer("lone surrogate", b'{"question": "\\ud800"}'),
    _answer("1,000 nested arrays", b'{"question": "hi", "slots": {"a": %s}}' % NESTED),
    _answer("question of 2,001", json.dumps({"question": "x" * 2001}).encode()),
    _answer("empty question", b'{"question": ""}'),
    _answer("question a number", b'{"question": 42}'),
    _answer("unknown field", b'{"question": "hi", "x": 1}'),
    _answer("tenant with newline", b'{"question": "hi", "tenant": "acme\\n"}'),
    _answer("tenant without key", b'{"question": "hi", "tenant": "acme"}'),
    _answer("forged key", b'{"question": "hi"}', {**_JSON, "X-API-Key": "ragc_tk_forged"}),
    _answer("bad language", b'{"question": "hi", "language": "klingon!"}'),
    _answer("nested slot", b'{"question": "hi", "slots": {"a": [1]}}'),
    _answer("text/plain body", b"hi", {"content-type": "text/plain"}),
    _answer("2 MiB body", b'{"question": "%s"}' % (b"x" * (2 << 20))),
    ("101 questions", "POST", "/v1/answer/batch", _JSON, BATCH_101),
    ("admin without token", "GET", "/v1/admin/versions", {}, b""),
    ("admin, wrong token", "POST", "/v1/admin/rollback", {"Authorization": "Bearer guess"}, b""),
    ("percent as text", "POST", "/v1/admin/rollout", _ADMIN, b'{"version": "v1", "percent": "5"}'),
    ("gc keep 0", "POST", "/v1/admin/gc", _ADMIN, b'{"keep": 0}'),
    ("unsigned webhook", "POST", "/v1/webhooks/knowledge-changed", _JSON, b'{"changed": ["a"]}'),
    ("GET on a POST route", "GET", "/v1/answer", {}, b""),
    ("no such route", "GET", "/v1/nothing", {}, b""),
)


def _half_sent(port: int, count: int) -> list[tuple[bytes, float]]:
    """``count`` connections that send their headers and a tenth of their body, then wait:
    what each got back and how long its connection stayed open."""
    head = (
        f"POST /v1/answer HTTP/1.1\r\nHost: {HOST}:{port}\r\n"
        "Content-Type: application/json\r\nContent-Length: 100\r\n\r\n"
    ).encode()
    sockets = []
    for _ in range(count):
        sock = socket.create_connection((HOST, port))
        sock.sendall(head + b'{"question')
        sock.settimeout(60)
        sockets.append(sock)
    began = time.monotonic()
    outcomes = []
    for sock in sockets:
        received = b""
        while chunk := sock.recv(65536):  # until the server closes the connection
            received += chunk
        outcomes.append((received, time.monotonic() - began))
        sock.close()
    return outcomes


def scenario_bad_input(run: Run) -> Row:
    """Every malformed request gets a 4xx with a JSON detail and hint, none a 5xx; bodies that
    never finish get a 408 and a closed connection; the service answers afterwards."""
    env = {"RAGC_AUDIT": "0", "RAGC_BODY_TIMEOUT_S": "2"}
    service = run.service(run.fresh_store("bad-input"), "bad-input", env=env)
    problems: list[str] = []
    with service.running(), httpx.Client(base_url=service.base, timeout=30) as client:
        for name, method, path, headers, content in BAD_INPUTS:
            response = client.request(method, path, headers=headers, content=content)
            try:
                body = response.json()
            except ValueError:
                body = {}
            if (
                not 400 <= response.status_code < 500
                or not body.get("detail")
                or not body.get("hint")
            ):
                problems.append(f"{name}: {response.status_code} {response.text[:80]}")
        half = _half_sent(service.port, 20)
        after = client.post("/v1/answer", json={"question": L1}).status_code
        log = service.log()
    timed_out = sum(r.startswith(b"HTTP/1.1 408") for r, _ in half)
    slowest = max(t for _, t in half)
    tracebacks = log.count("Traceback")
    ok = not problems and timed_out == len(half) and after == 200 and tracebacks == 0
    measured = (
        f"{len(BAD_INPUTS) - len(problems)}/{len(BAD_INPUTS)} 4xx with detail and hint; "
        f"{timed_out}/{len(half)} half-sent bodies 408 and closed within {slowest:.1f} s "
        f"(limit 2 s); answers after: {after}; tracebacks in the log: {tracebacks}"
    )
    if problems:
        measured += "; " + "; ".join(problems[:3])
    return Row("bad-input", measured, "all 4xx + hint, 0 5xx, 408s, still answering", ok)


SCENARIOS: dict[str, Callable[[Run], Row]] = {
    "flips": scenario_flips,
    "versions": scenario_versions,
    "redis": scenario_redis,
    "worker": scenario_worker,
    "postgres": scenario_postgres,
    "publisher": scenario_publisher,
    "bad-input": scenario_bad_input,
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", nargs="*", choices=sorted(SCENARIOS), default=None)
    parser.add_argument("--flips", type=int, default=50)
    parser.add_argument("--requests", type=int, default=4000, help="Requests per load run.")
    parser.add_argument("--build-dir", type=Path, default=None)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="ragc-faults-") as folder:
        work = Path(folder)
        store = f"sqlite:///{work / 'examples.db'}"
        compile_examples(store, args.build_dir or work / "build")
        run = Run(work=work, store=store, flips=args.flips, requests=args.requests)
        rows: list[Row] = []
        for name in args.only or list(SCENARIOS):
            console.print(f"[bold]{name}[/] ...")
            started = time.monotonic()
            try:
                row = SCENARIOS[name](run)
            except Exception as exc:  # noqa: BLE001 - a broken scenario is a FAIL row
                row = Row(name, f"error: {type(exc).__name__}: {exc}"[:300], "-", False)
            console.print(f"  {row.measured} ({time.monotonic() - started:.0f} s)")
            rows.append(row)
    table = Table("scenario", "measured", "target", "result")
    for row in rows:
        table.add_row(
            row.scenario,
            row.measured,
            row.target,
            "[green]PASS[/]" if row.passed else "[red]FAIL[/]",
        )
    Console(width=max(console.width, 160)).print(table)
    return 0 if all(r.passed for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
