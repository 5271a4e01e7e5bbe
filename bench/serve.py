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
import contextlib
import dataclasses
import json
import signal
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

# Run as a script, Python puts bench/ first on the path, where bench/stores.py would shadow
# the `stores` package: put the project root there instead.
if __package__ in (None, ""):
    sys.path[0] = str(Path(__file__).resolve().parent.parent)
from typing import Literal

import httpx
from rich.console import Console

from bench._load import (
    LoadGenerator,
    PythonLoad,
    Result,
    Target,
    WrkLoad,
    console,
    find_wrk,
    load_average,
    measure,
    measure_servers,
)
from bench._serve_tables import (
    audit_table,
    batching_table,
    batching_targets,
    results_table,
    targets_table,
)
from bench._server import ROOT, Server, compile_examples

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


ROTATION = 16
"""Distinct questions a cold target cycles through at most."""


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
            + f"; {load_average()}:"
        )
        order = [tag for tag in ("before", "after") if tag in servers]
        loads: dict[str, LoadGenerator] = {tag: generator(servers[tag].port) for tag in order}
        for label, concurrency, count in levels:
            texts, calls = _batch_sizes(after.base)
            measured = measure_servers(
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


def run(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="ragc-serve-bench-") as tmp:
        work = Path(tmp)
        store_url = args.store
        if not store_url:
            store_url = f"sqlite:///{work / 'knowledge.db'}"
            build_dir = Path(args.build_dir) if args.build_dir else work / "build"
            compile_examples(store_url, build_dir)
        elif args.audit:
            console.print(f"[yellow]audit on: audited answers are written to {store_url}[/]")

        wrk = None if args.loadgen == "python" else find_wrk(args.install_wrk)
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
            console.print(f"before measuring: {load_average()}")
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
                    measure(
                        load, fast, args.requests, args.concurrency, args.max_seconds, args.rounds
                    )
                )
                loaded.update(
                    measure(load, slow, args.slow_requests, args.concurrency, args.max_seconds)
                )
                if args.moderate:
                    console.print(f"measuring at concurrency {args.moderate}:")
                    moderate.update(
                        measure(load, targets, args.slow_requests, args.moderate, args.max_seconds)
                    )
                if args.latency_requests:
                    console.print("measuring at concurrency 1:")
                    idle.update(measure(load, targets, args.latency_requests, 1, args.max_seconds))
        load_name = load.name
        if args.compare_audit and not args.cold_only:
            other = Server(store_url, audit=not args.audit, log_path=work / "granian-2.log")
            with other.running():
                console.print(f"floor and L1 again, audit {'off' if args.audit else 'on'}:")
                load = generator(other.port)
                flipped_runs = measure(
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
            console.print(results_table(title, list(runs.values()), runs.get("floor")))
    if flipped_runs:
        console.print(audit_table(args.audit, loaded, flipped_runs))
    if cold:
        window = f"{args.encoder_window_ms:g} ms window"
        console.print(
            results_table(
                "Route memo off: every request runs the encoder and the router "
                f"(RAGC_ENCODER_BATCH={args.encoder_batch}, {window})",
                list(cold.values()),
                None,
            )
        )
    if cold_before:
        # Ten columns: wider than the default 80 a pipe gets, and unreadable squeezed into it.
        Console(soft_wrap=True, width=max(console.width, 150)).print(
            batching_table(args, cold_before, cold, mean_batch)
        )
    console.print(targets_table(loaded, idle, cold, moderate))
    if cold_before:
        console.print(batching_targets(args, cold_before, cold))
    console.print(f"load generator: {load_name}; server: granian, 1 worker, uvloop, HTTP/1.1")
    console.print(f"after measuring: {load_average()} (other work on the machine skews the run)")


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
    for flag, meaning in (
        ("--audit", "RAGC_AUDIT of the main server (default on, as served)"),
        ("--compare-audit", "measure L1 again on a server with the audit log flipped"),
        ("--compare-memo", "measure L2 and L3 again on a server with the route memo off"),
        (
            "--compare-batching",
            "in the memo-off runs, also measure a server with encoder batching off",
        ),
    ):
        parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=True, help=meaning)
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
