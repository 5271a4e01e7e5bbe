"""Encoder benchmark: all-mpnet-base-v2 (fp32) beside all-MiniLM-L6-v2 (int8), the same run.

    uv run python bench/encoders.py [--questions 256] [--convert]

For each local encoder: the load time of a cold process (import and constructor, as a service
worker starting; median of 3), one question at a time with the service's settings (no
spinning threads; p50 and p99), and batch throughput with the compile's settings, over real
user questions (clinc150's dev queries under ``../shared/eval/``, else built-in ones). MPNet
also shows its cosine to the torch reference vectors in ``tests/fixtures/`` and its recorded
conversion time; ``--convert`` converts again into a temporary folder and times that. Ratios
are against MiniLM in the same run: on a shared machine they move less than the times.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

# Run as a script, Python puts bench/ first on the path, where bench/stores.py would shadow
# the `stores` package: put the project root there instead.
if __package__ in (None, ""):
    sys.path[0] = str(Path(__file__).resolve().parent.parent)

import numpy as np
from rich.console import Console
from rich.table import Table

from providers import _mpnet_cache
from providers.embedders import Embedder, MiniLMEmbedder
from providers.mpnet import MPNetEmbedder

ROOT = Path(__file__).resolve().parent.parent
QUERIES = ROOT.parent / "shared" / "eval" / "clinc150" / "queries_dev.jsonl"
REFERENCE = ROOT / "tests" / "fixtures" / "mpnet_reference.json"
FALLBACK = [
    "how long does the 500 wh battery take to charge from empty",
    "can i change my pin at an atm",
    "tell me a joke",
    "what is the warranty on the frame",
    "I was charged twice for the same order, can I get one refunded?",
]
console = Console()

_COLD = """
import sys, time
started = time.perf_counter()
from providers.embedders import MiniLMEmbedder
from providers.mpnet import MPNetEmbedder
kind = MPNetEmbedder if sys.argv[1] == "mpnet" else MiniLMEmbedder
kind(spin=False).embed(["hello"])
print(time.perf_counter() - started)
"""


def questions(count: int) -> list[str]:
    if not QUERIES.is_file():
        return (FALLBACK * (count // len(FALLBACK) + 1))[:count]
    with QUERIES.open() as lines:
        found = [json.loads(line)["query"] for line in lines]
    return found[:: max(1, len(found) // count)][:count]


def cold_load(kind: str, rounds: int = 3) -> float:
    times = []
    for _ in range(rounds):
        out = subprocess.run(
            [sys.executable, "-c", _COLD, kind],
            capture_output=True,
            text=True,
            cwd=ROOT,
            check=True,
        )
        times.append(float(out.stdout.strip().splitlines()[-1]))
    return float(np.median(times))


def single(encoder: Embedder, texts: Sequence[str]) -> tuple[float, float]:
    """p50 and p99 milliseconds of one question at a time."""
    for text in texts[:5]:
        encoder.embed([text])
    times = []
    for text in texts:
        started = time.perf_counter()
        encoder.embed([text])
        times.append(time.perf_counter() - started)
    p50, p99 = np.percentile(times, [50, 99]) * 1000
    return float(p50), float(p99)


def throughput(encoder: Embedder, texts: Sequence[str]) -> float:
    encoder.embed(texts[:8])
    started = time.perf_counter()
    encoder.embed(texts)
    return len(texts) / (time.perf_counter() - started)


def reference_cosine(encoder: MPNetEmbedder) -> float:
    reference = json.loads(REFERENCE.read_text())
    vectors = np.concatenate([encoder.embed([text]) for text in reference["sentences"]])
    expected = np.array(reference["vectors"], dtype=np.float32)
    cosines = np.sum(vectors * expected, axis=1) / np.linalg.norm(expected, axis=1)
    return float(cosines.min())


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--questions", type=int, default=256)
    parser.add_argument("--convert", action="store_true", help="time a fresh conversion too")
    args = parser.parse_args(argv)
    texts = questions(args.questions)
    prepared, _ = _mpnet_cache.ensure_converted()
    converted = f"{prepared.manifest['seconds']:.1f} s (recorded)"
    if args.convert:
        with tempfile.TemporaryDirectory() as scratch:
            started = time.perf_counter()
            _mpnet_cache.ensure_converted(Path(scratch))
            converted = f"{time.perf_counter() - started:.1f} s (this run, verified)"
    mpnet = MPNetEmbedder(spin=False)
    serving: dict[str, Embedder] = {"MiniLM int8": MiniLMEmbedder(spin=False), "MPNet fp32": mpnet}
    batch: dict[str, Embedder] = {"MiniLM int8": MiniLMEmbedder(), "MPNet fp32": MPNetEmbedder()}
    loads = {"MiniLM int8": cold_load("minilm"), "MPNet fp32": cold_load("mpnet")}
    rows = {}
    for name, encoder in serving.items():
        p50, p99 = single(encoder, texts)
        rows[name] = (loads[name], p50, p99, throughput(batch[name], texts))
    table = Table(title=f"local encoders, {len(texts)} questions (2 cores, shared)")
    for column in ("encoder", "dims", "cold load s", "single p50 ms", "p99 ms", "batch /s"):
        table.add_column(column, justify="left" if column == "encoder" else "right")
    base = rows["MiniLM int8"]
    for name, (load, p50, p99, rate) in rows.items():
        table.add_row(
            name,
            str(serving[name].dim),
            f"{load:.2f} (x{load / base[0]:.1f})",
            f"{p50:.1f} (x{p50 / base[1]:.1f})",
            f"{p99:.1f} (x{p99 / base[2]:.1f})",
            f"{rate:.0f} (x{rate / base[3]:.2f})",
        )
    console.print(table)
    console.print(
        f"MPNet: conversion {converted}; min cosine to the torch reference "
        f"{reference_cosine(mpnet):.6f}; mean tokens per question "
        f"{np.mean([len(e.ids) for e in mpnet._tokenizer.encode_batch(texts)]):.1f}",
        highlight=False,
    )


if __name__ == "__main__":
    main()
