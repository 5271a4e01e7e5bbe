"""Store benchmark: L1 answers through the service on SQLite, Redis, and Redis + Postgres audit.

    uv run python bench/stores.py [--requests N] [--concurrency C] [--rounds R]

One run compiles the examples into SQLite, copies the active version into Redis (a key prefix
of its own) and creates a migrated throwaway Postgres database; then it serves each
configuration with granian and loads L1 with the same fixed request count, printing
throughput and p50/p99 with ratios to the SQLite figure. Versions are held in process memory
by every replica, so L1 should barely depend on the store: what differs is the audit path.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

# Run as a script, Python puts bench/ first on the path, where bench/stores.py would shadow
# the `stores` package: put the project root there instead.
if __package__ in (None, ""):
    sys.path[0] = str(Path(__file__).resolve().parent.parent)

import psycopg
from psycopg import sql
from rich.table import Table

from bench import _load as loads
from bench._load import Result, Target, console
from bench._server import Server, compile_examples
from bench.serve import ANSWER_PATH, L1_QUESTIONS
from stores import open_store
from stores.postgres import migrate

REDIS = os.environ.get("RAGC_BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
ADMIN_DSN = os.environ.get(
    "RAGC_BENCH_PG_DSN", "host=127.0.0.1 port=5432 dbname=test user=postgres connect_timeout=3"
)


@contextmanager
def throwaway_database() -> Iterator[str]:
    """A migrated Postgres database of its own, dropped afterwards."""
    name = f"ragc_bench_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(ADMIN_DSN, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    dsn = psycopg.conninfo.make_conninfo(ADMIN_DSN, dbname=name)
    try:
        migrate(dsn)
        yield dsn
    finally:
        with psycopg.connect(ADMIN_DSN, autocommit=True) as admin:
            admin.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


def copy_to_redis(sqlite_url: str) -> str:
    """The SQLite store's active version published into Redis under a fresh prefix."""
    source = open_store(sqlite_url)
    try:
        active = source.active_version()
        assert active is not None
        snapshot = source.load(active)
    finally:
        source.close()
    url = f"{REDIS}?prefix=bench-{uuid.uuid4().hex[:8]}"
    target = open_store(url)
    try:
        target.publish(snapshot, activate=True)
    finally:
        target.close()
    return url


def drop_redis(url: str) -> None:
    from tests.conftest import drop_redis_prefix  # noqa: PLC0415 - the same cleanup as tests

    drop_redis_prefix(url)


def run(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="ragc-stores-bench-") as tmp:
        work = Path(tmp)
        sqlite_url = f"sqlite:///{work / 'knowledge.db'}"
        compile_examples(sqlite_url, Path(args.build_dir) if args.build_dir else work / "build")
        redis_url = copy_to_redis(sqlite_url)
        wrk = loads.find_wrk(install=False)
        target = Target("L1", ANSWER_PATH, L1_QUESTIONS[0])
        results: dict[str, Result] = {}
        try:
            with throwaway_database() as dsn:
                configs = (
                    ("SQLite (audit in the file)", sqlite_url, True, None),
                    ("Redis (no audit log)", redis_url, False, None),
                    ("Redis + Postgres audit", redis_url, True, dsn),
                )
                console.print(f"before measuring: {loads.load_average()}")
                for name, url, audit, warm in configs:
                    if warm:
                        os.environ["RAGC_WARM_DSN"] = warm
                    else:
                        os.environ.pop("RAGC_WARM_DSN", None)
                    server = Server(url, audit=audit, log_path=work / "granian.log")
                    with server.running():
                        load = (
                            loads.WrkLoad(wrk, server.port, work)
                            if wrk
                            else loads.PythonLoad(server.port)
                        )
                        console.print(f"{name}: {load.name}")
                        measured = loads.measure(
                            load, [target], args.requests, args.concurrency, 120.0, args.rounds
                        )
                        results[name] = measured["L1"]
        finally:
            os.environ.pop("RAGC_WARM_DSN", None)
            drop_redis(redis_url)
    base = next(iter(results.values()))
    table = Table(title=f"L1 through the service, concurrency {args.concurrency}")
    for column in ("store", "req/s", "vs SQLite", "p50 ms", "p99 ms", "p99 vs SQLite"):
        table.add_column(column, justify="left" if column == "store" else "right")
    for name, result in results.items():
        table.add_row(
            name,
            f"{result.rps:,.0f}",
            f"{result.rps / base.rps:.0%}",
            f"{result.p50_ms:.2f}",
            f"{result.p99_ms:.2f}",
            f"{result.p99_ms / base.p99_ms:.0%}" if base.p99_ms else "-",
        )
    console.print(table)
    console.print(f"after measuring: {loads.load_average()}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--build-dir", default="", help="build cache to reuse for the compile")
    run(parser.parse_args())


if __name__ == "__main__":
    main()
