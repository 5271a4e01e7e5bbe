"""Peer benchmark: ragc against GPTCache on the same labelled query sets, one run.

    uv run python bench/peers.py [--sets clinc150,banking77_oos,stackfaq]   (default: clinc150)

For each set under ``../shared/eval/<set>/`` (beside the checkout):

* ragc: ``run_eval(queries_dev.jsonl, knowledge)`` (compiling if needed) — its figures and the
  per-query latency of the answer ladder.
* GPTCache (``gptcache`` in the dev group) configured with the SAME local sentence encoder
  (``MiniLMEmbedder``, never GPTCache's default ONNX model from a hub), an sqlite scalar store and
  an exact in-memory cosine vector store (see :class:`NumpyVectorBase`). The cache holds every
  known question of the knowledge — each FAQ entry's question and paraphrases (``faq.jsonl``), or
  each markdown document's ``# title`` — with the entry id (or document stem) as the cached
  "answer". Each dev query is looked up with ``gptcache.adapter.api.get`` at the thresholds of the
  reference document, 0.85 (FAQ match) and 0.95 (semantic cache), plus a tuned middle value 0.75.
  A hit whose id matches ``accept`` is correct, a hit on an out-of-scope query is wrong, a miss is
  the fallback; outcomes go through ``schemas.evaluation.summarize``, so the definitions of
  coverage, wrong-answer rate and rejection are literally ragc's.

Latency is per query, wall clock, including the query's embedding in both systems. Ratios are
against ragc measured in the same run.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Run as a script, Python puts bench/ first on the path, where bench/stores.py would shadow
# the `stores` package: put the project root there instead.
if __package__ in (None, ""):
    sys.path[0] = str(Path(__file__).resolve().parent.parent)

from bench._setup import quiet_offline_environment
from schemas.arrays import Floats

quiet_offline_environment()

import numpy as np  # noqa: E402
from gptcache import Cache, Config  # noqa: E402
from gptcache.adapter.api import get  # noqa: E402
from gptcache.manager import CacheBase, get_data_manager  # noqa: E402
from gptcache.manager.vector_data.base import VectorBase, VectorData  # noqa: E402
from gptcache.processor.pre import get_prompt  # noqa: E402
from gptcache.similarity_evaluation import SearchDistanceEvaluation  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from bench._targets import against_target  # noqa: E402
from providers.embedders import MiniLMEmbedder  # noqa: E402
from ragc.evaluate import run_eval  # noqa: E402
from schemas.evaluation import EvalReport, Outcome, summarize  # noqa: E402

console = Console(width=140)

ROOT = Path(__file__).resolve().parent.parent
EVAL_DIR = ROOT.parent / "shared" / "eval"
#: 0.85 (FAQ match) and 0.95 (semantic cache) are the reference document's; 0.75 is tuned.
THRESHOLDS = (0.75, 0.85, 0.95)

X = "\u00d7"  # the multiplication sign of the ratio columns


# --------------------------------------------------------------------------------------------
# GPTCache side
# --------------------------------------------------------------------------------------------


class NumpyVectorBase(VectorBase):  # type: ignore[misc]
    """A :class:`gptcache.manager.vector_data.base.VectorBase` doing exact search with numpy.

    faiss / hnswlib / usearch are not installed, and GPTCache's own backends would try to
    ``pip install`` them at import time, so this is the smallest correct in-memory store: a
    brute-force scan over unit vectors. It returns ``(distance, id)`` pairs, best first, like
    GPTCache's faiss store, but with ``distance = 1 - cosine`` (not faiss's squared L2).
    """

    def __init__(self, dimension: int, top_k: int = 1) -> None:
        self._dim = dimension
        self._top_k = top_k
        self._ids: list[int] = []
        self._rows: list[Floats] = []
        self._matrix: Floats = np.zeros((0, dimension), np.float32)

    def mul_add(self, datas: list[VectorData]) -> None:
        for d in datas:
            v = np.asarray(d.data, np.float32).reshape(-1)
            self._ids.append(int(d.id))
            self._rows.append(v / max(float(np.linalg.norm(v)), 1e-12))
        self._matrix = np.vstack(self._rows) if self._rows else self._matrix

    def search(self, data: Floats, top_k: int = -1) -> list[tuple[float, int]]:
        if not self._ids:
            return []
        k = self._top_k if top_k in (-1, None) else top_k
        q = np.asarray(data, np.float32).reshape(-1)
        q = q / max(float(np.linalg.norm(q)), 1e-12)
        cos = self._matrix @ q
        top = np.argpartition(-cos, k - 1)[:k] if k < len(cos) else np.arange(len(cos))
        best = top[np.argsort(-cos[top])]
        return [(float(1.0 - cos[i]), self._ids[i]) for i in best]

    def rebuild(self, ids: Any = None) -> bool:  # noqa: ARG002
        return True

    def delete(self, ids: Any) -> bool:
        gone = {int(i) for i in ids}
        keep = [j for j, i in enumerate(self._ids) if i not in gone]
        self._ids = [self._ids[j] for j in keep]
        self._rows = [self._rows[j] for j in keep]
        self._matrix = np.vstack(self._rows) if self._rows else np.zeros((0, self._dim), np.float32)
        return True

    def get_embeddings(self, data_id: int | str) -> Floats | None:
        try:
            return self._rows[self._ids.index(int(data_id))]
        except ValueError:
            return None


def known_questions(knowledge: Path) -> list[tuple[str, str]]:
    """``(question, id)`` for every question the knowledge answers: FAQ questions and
    paraphrases mapped to the entry id, markdown ``# titles`` mapped to the file stem."""
    pairs: list[tuple[str, str]] = []
    faq = knowledge / "faq.jsonl"
    if faq.is_file():
        for line in faq.read_text("utf-8").splitlines():
            if not line.strip():
                continue
            row = json.loads(line)
            questions = [row.get("question"), *row.get("paraphrases", [])]
            pairs.extend((str(q), str(row["id"])) for q in questions if q)
    for doc in sorted(knowledge.glob("*.md")):
        for text in doc.read_text("utf-8").splitlines():
            if text.startswith("# "):
                pairs.append((text[2:].strip(), doc.stem))
                break
    return pairs


def _hit_is_correct(hit_id: str, accept: Sequence[dict[str, str]]) -> bool:
    return any(t.get("entry_id", t.get("doc_id")) == hit_id for t in accept)


@dataclass
class PeerRun:
    threshold: float
    report: EvalReport
    latencies: list[float]


def run_gptcache(
    knowledge: Path, cases: list[dict[str, Any]], embedder: MiniLMEmbedder
) -> list[PeerRun]:
    pairs = known_questions(knowledge)
    if not pairs:
        raise SystemExit(f"no FAQ entries or markdown titles found in {knowledge}")
    vectors = embedder.embed([q for q, _ in pairs])

    def embed_one(text: str, **_: Any) -> Floats:
        vector: Floats = embedder.embed([text])[0].astype(np.float32)
        return vector

    runs = []
    with tempfile.TemporaryDirectory(prefix="ragc-peers-") as tmp:
        data_manager = get_data_manager(
            CacheBase("sqlite", sql_url=f"sqlite:///{Path(tmp) / 'gptcache.db'}"),
            NumpyVectorBase(dimension=int(vectors.shape[1]), top_k=1),
            max_size=len(pairs) + 1000,  # the default (1000) would evict most of the FAQ
        )
        data_manager.import_data(
            [q for q, _ in pairs], [i for _, i in pairs], list(vectors), [None] * len(pairs)
        )
        for threshold in THRESHOLDS:
            cache = Cache()
            # Score semantics: GPTCache serves a hit when rank >= (max - min) * threshold, where
            # (min, max) = evaluation.range(). SearchDistanceEvaluation(max_distance=1,
            # positive=False) gives rank = 1 - distance, and NumpyVectorBase returns
            # distance = 1 - cosine, so rank == cosine and the range is (0, 1): the threshold
            # is literally a cosine similarity. (With GPTCache's stock faiss store, distance is
            # the squared L2 = 2 - 2*cos of unit vectors and max_distance defaults to 4, so a
            # "0.85" threshold there would mean cos >= 0.70.)
            cache.init(
                pre_embedding_func=get_prompt,
                embedding_func=embed_one,
                data_manager=data_manager,
                similarity_evaluation=SearchDistanceEvaluation(max_distance=1.0, positive=False),
                config=Config(similarity_threshold=threshold),
            )
            outcomes, latencies = [], []
            for case in cases:
                accept = case.get("accept") or []
                started = time.perf_counter()
                hit = get(case["query"], cache_obj=cache)
                ms = (time.perf_counter() - started) * 1000
                latencies.append(ms)
                served = hit is not None
                correct = _hit_is_correct(str(hit), accept) if served else not accept
                outcomes.append(
                    Outcome(
                        query=case["query"],
                        layer="HIT" if served else "SAFE",
                        served=served,
                        correct=correct,
                        in_scope=bool(accept),
                        oos_type=case.get("oos_type"),
                        entry_id=str(hit) if served else None,
                        expected=tuple(accept),
                        confidence=0.0,
                        latency_ms=ms,
                    )
                )
            runs.append(PeerRun(threshold, summarize(outcomes), latencies))
    return runs


# --------------------------------------------------------------------------------------------
# report
# --------------------------------------------------------------------------------------------


def _pct(values: Sequence[float], q: float) -> float:
    return float(np.percentile(np.asarray(values, np.float64), q)) if values else 0.0


def _ratio(value: float, base: float) -> str:
    if base == 0:
        return "—" if value == 0 else "∞"
    return f"{X}{value / base:.2f}"


def bench(name: str, embedder: MiniLMEmbedder) -> None:
    folder = EVAL_DIR / name
    queries, knowledge = folder / "queries_dev.jsonl", folder / "knowledge"
    if not queries.is_file() or not knowledge.is_dir():
        raise SystemExit(
            f"eval set {name!r} not found: expected {queries} and {knowledge}/ "
            f"(../shared/eval/<set>/ beside the checkout)"
        )
    cases = [json.loads(x) for x in queries.read_text("utf-8").splitlines() if x.strip()]

    console.print(f"[bold]{name}[/]: ragc eval (compiles on first use, ~2-3 min)…")
    result = run_eval(queries, knowledge)
    ragc_lat = [o.latency_ms for o in result.outcomes]
    console.print(f"[bold]{name}[/]: GPTCache lookups at {', '.join(map(str, THRESHOLDS))}…")
    peers = run_gptcache(knowledge, cases, embedder)

    base = result.report
    b50, b99 = _pct(ragc_lat, 50), _pct(ragc_lat, 99)
    table = Table(
        title=f"{name}: {base.queries} dev queries ({base.out_of_scope} out of scope)",
        caption="ratios vs ragc in the same run; latency per query incl. embedding",
    )
    for col in ("system", "coverage", "wrong rate", "rejection", "p50 ms", "p99 ms"):
        table.add_column(col, justify="left" if col == "system" else "right")
    for col in (f"coverage {X}", f"wrong {X}", f"p50 {X}", f"p99 {X}"):
        table.add_column(col, justify="right")

    def rej(r: EvalReport) -> str:
        return "—" if r.rejection is None else f"{r.rejection:.1%}"

    thr = f"{result.threshold:.2f}" if result.threshold is not None else "—"
    table.add_row(
        f"ragc {result.version} (router τ={thr})",
        f"{base.coverage:.1%}",
        f"{base.wrong_rate:.1%}",
        rej(base),
        f"{b50:.2f}",
        f"{b99:.2f}",
        *[f"{X}1.00"] * 4,
    )
    for run in peers:
        r = run.report
        p50, p99 = _pct(run.latencies, 50), _pct(run.latencies, 99)
        table.add_row(
            f"GPTCache MiniLM cos≥{run.threshold:.2f}",
            f"{r.coverage:.1%}",
            f"{r.wrong_rate:.1%}",
            rej(r),
            f"{p50:.2f}",
            f"{p99:.2f}",
            _ratio(r.coverage, base.coverage),
            _ratio(r.wrong_rate, base.wrong_rate),
            _ratio(p50, b50),
            _ratio(p99, b99),
        )
    console.print(table)
    console.print(against_target(name, base), highlight=False)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--sets",
        default="clinc150,banking77_oos,stackfaq",
        help="comma-separated eval set names",
    )
    args = parser.parse_args(argv)
    embedder = MiniLMEmbedder()
    for name in [s.strip() for s in args.sets.split(",") if s.strip()]:
        bench(name, embedder)


if __name__ == "__main__":
    main()
