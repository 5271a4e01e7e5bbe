"""The tables ``bench/serve.py`` prints: results beside the floor, the targets met or missed,
the audit log's cost and encoder batching before and after."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from rich.table import Table

from bench._load import Result

TARGET_L1_SHARE = 0.50
TARGET_L1_P99_MS = 2.0
TARGET_L2_P99_MS = 10.0
TARGET_BATCH_SPEEDUP = 2.0
COLD_LEVELS = ("saturated", "moderate load", "concurrency 1")
"""The cold runs' concurrency levels, in the order they are measured."""


def results_table(title: str, results: Sequence[Result], floor: Result | None) -> Table:
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


def targets_table(
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


def audit_table(audit: bool, first: dict[str, Result], second: dict[str, Result]) -> Table:
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


def batching_table(
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


def batching_targets(
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
