"""Router benchmark: which encoder and features win, each tuned the way a compile tunes it.

    uv run python bench/router.py [--sets clinc150,banking77,banking77_oos]

First the encoders' cost per question, as the service pays it: one question at a time (p50 and
p99 over a few hundred questions, interleaved in rounds) and questions per second in batches of
eight (what encoder batching gives at concurrency 8). Then, for each FAQ-style set under
``../shared/eval/<set>/`` (``faq.jsonl`` with paraphrases, and ``out_of_scope.jsonl`` when there
is one), routers trained on the knowledge alone:

* ``n-grams``: the logistic regression over hashed word and character n-grams, alone;
* ``MiniLM``: the logistic regression over the int8 MiniLM sentence vector, alone;
* ``MiniLM layers 4-6``: the same over the mean-pooled hidden states of MiniLM's last three
  layers (what router version 8 read);
* ``MPNet``: the same over the all-mpnet-base-v2 (fp32) sentence vector;
* ``two heads, sentence``: both regressions over n-grams and the sentence vector, probabilities
  averaged with equal weights, the lower threshold when both heads agree (router version 5);
* ``two heads, layers 4-6, --similarity-gate``: ``train_router`` allowed to tune a minimum
  similarity to the entry's centroid as well (``RouterPolicy(similarity_gate=True)``);
* ``two heads, layers 4-6 (router v8)``: ``train_router`` at its default policy over n-grams
  and MiniLM's three layers, the n-gram head's weight tuned with the thresholds;
* ``two heads, MPNet (shipped)``: the same over n-grams and the MPNet vector (router version
  10, what a compile builds when MPNet is installed);
* ``two heads, MPNet int8``: the same over the statically quantised MPNet graph
  (``RAGC_ROUTER_PRECISION=int8``).

Each is tuned exactly as ``train_router`` tunes the shipped one (``held_out_verdicts`` then
``tune_rule``: held-out paraphrases, known out-of-scope questions and left-out classes, a 5 %
out-of-scope prior, 2 % wrong-answer target), then answers the dev queries. The table shows
the figures at that compiled rule, the wrong-answer rate its tuning expected at the dev set's
own out-of-scope share beside the measured one, and, for reference only, the best coverage any
single threshold reaches on dev with a wrong-answer rate within the set's target (tuned on dev:
an upper bound, never what a compile gets; no agreement rule there, the router's own similarity
gate kept). Coverage ratios are against the shipped router of the same run.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Sequence
from functools import partial
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
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from bench._targets import TARGETS, against_target  # noqa: E402
from providers.embedders import ROUTER_LAYERS, Embedder, MiniLMEmbedder  # noqa: E402
from providers.mpnet import MPNetEmbedder  # noqa: E402
from schemas.evaluation import EvalReport, Outcome, summarize  # noqa: E402
from schemas.risk import estimated_wrong_rate  # noqa: E402
from schemas.router import OUT_OF_SCOPE, RouterModel, _softmax  # noqa: E402
from tasks.held_out import (  # noqa: E402
    Judge,
    Judgement,
    Thresholds,
    held_out_verdicts,
    judge,
    tune_rule,
)
from tasks.router import (  # noqa: E402
    PROBE_ITERATIONS,
    RouterPolicy,
    _fit_head,
    fit_router,
    train_router,
    vector_c,
)

ROOT = Path(__file__).resolve().parent.parent
EVAL = ROOT.parent / "shared" / "eval"
FAQ_SETS = ("clinc150", "banking77", "banking77_oos")


def wrong_target(name: str) -> float:
    """The set's wrong-answer target for the dev-best column (2 % where the issue sets none)."""
    return TARGETS[name].wrong_rate or 0.02


console = Console(width=140)

Fit = Callable[[Sequence[tuple[str, str]], Floats, int], Judge]


def fit_ngrams(examples: Sequence[tuple[str, str]], vectors: Floats, iters: int) -> Judge:
    del vectors
    model = fit_router(examples, max_iter=iters)

    def verdict(question: str, vector: Floats | None) -> Judgement:
        del vector  # n-grams only
        return judge(model, question, None)

    return verdict


def fit_vector(examples: Sequence[tuple[str, str]], vectors: Floats, iters: int) -> Judge:
    classes = sorted({c for _, c in examples})
    labels = np.array([classes.index(c) for _, c in examples])
    weights, bias = _fit_head(
        vectors, labels, len(classes), c=vector_c(vectors.shape[1]), max_iter=iters, initial=None
    )

    def verdict(question: str, vector: Floats | None) -> Judgement:
        del question  # the vector only
        assert vector is not None
        probs = _softmax(bias + vector @ weights)
        best = int(np.argmax(probs))
        return classes[best], float(probs[best]), False, 1.0

    return verdict


def fit_two_heads(examples: Sequence[tuple[str, str]], vectors: Floats, iters: int) -> Judge:
    """Router version 5: equal weights, no similarity gate."""
    model: RouterModel = fit_router(examples, vectors=vectors, encoder_id="minilm", max_iter=iters)
    return lambda q, v: (*judge(model, q, v)[:3], 1.0)


# name -> (fit, the encoder whose vectors it reads: "sentence", "layers", "mpnet", "mpnet-int8")
VARIANTS: dict[str, tuple[Fit, str]] = {
    "n-grams": (fit_ngrams, "sentence"),
    "MiniLM": (fit_vector, "sentence"),
    "MiniLM layers 4-6": (fit_vector, "layers"),
    "MPNet": (fit_vector, "mpnet"),
    "two heads, sentence": (fit_two_heads, "sentence"),
}
GATED = "two heads, layers 4-6, --similarity-gate"
V8 = "two heads, layers 4-6 (router v8)"
SHIPPED = "two heads, MPNet (shipped)"
INT8 = "two heads, MPNet int8"
# name -> (policy, encoder): ``train_router`` itself
COMPILED: dict[str, tuple[RouterPolicy, str]] = {
    GATED: (RouterPolicy(similarity_gate=True), "layers"),
    V8: (RouterPolicy(), "layers"),
    INT8: (RouterPolicy(), "mpnet-int8"),
    SHIPPED: (RouterPolicy(), "mpnet"),
}


def load_set(name: str) -> tuple[list[tuple[str, str]], list[str], list[dict[str, Any]]]:
    knowledge = EVAL / name / "knowledge"
    examples: list[tuple[str, str]] = []
    for line in (knowledge / "faq.jsonl").read_text("utf-8").splitlines():
        if line.strip():
            entry = json.loads(line)
            asked = [entry["question"]] if entry.get("question") else []
            examples += [(q, entry["id"]) for q in [*asked, *entry.get("paraphrases", [])]]
    oos_file = knowledge / "out_of_scope.jsonl"
    oos = (
        [json.loads(line)["question"] for line in oos_file.read_text("utf-8").splitlines() if line]
        if oos_file.is_file()
        else []
    )
    queries = [
        json.loads(line)
        for line in (EVAL / name / "queries_dev.jsonl").read_text("utf-8").splitlines()
        if line.strip()
    ]
    return list(dict.fromkeys(examples)), list(dict.fromkeys(oos)), queries


def figures(
    verdicts: Sequence[Judgement],
    queries: Sequence[dict[str, Any]],
    rule: Thresholds,
) -> EvalReport:
    """The eval's figures (``summarize``, the same definitions as ``ragc eval``) of serving
    ``verdicts`` by ``rule``."""
    outcomes = []
    gate = rule.similarity
    for (predicted, confidence, agreed, near), query in zip(verdicts, queries, strict=True):
        accept = tuple(query["accept"])
        served = (
            predicted != OUT_OF_SCOPE
            and (gate is None or near >= gate)
            and (confidence >= rule.threshold or (agreed and confidence >= rule.agreed))
        )
        outcomes.append(
            Outcome(
                query=str(query["query"]),
                layer="L2" if served else "SAFE",
                served=served,
                correct=served and any(t.get("entry_id") == predicted for t in accept),
                in_scope=bool(accept),
                oos_type=query.get("oos_type"),
                entry_id=predicted if served else None,
                expected=accept,
                confidence=confidence,
                latency_ms=0.0,
            )
        )
    return summarize(outcomes)


def best_on_dev(
    verdicts: Sequence[Judgement],
    queries: Sequence[dict[str, Any]],
    target: float,
    gate: float | None,
) -> tuple[float, EvalReport | None]:
    """The single threshold with the most coverage on dev within ``target`` wrong answers
    (the router's similarity gate, if any, kept as tuned)."""
    best: tuple[float, EvalReport | None] = (1.0, None)
    for t in np.round(np.arange(0.0, 1.0, 0.01), 2):
        got = figures(verdicts, queries, Thresholds(float(t), float(t), {}, gate))
        if got.wrong_rate <= target and (best[1] is None or got.coverage > best[1].coverage):
            best = (float(t), got)
    return best


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


Row = tuple[str, Thresholds, EvalReport, float | None, tuple[float, EvalReport | None], float, bool]
"""One router's figures: name, rule, dev figures, expected wrong rate, dev-best, fit seconds,
whether it has two heads."""


def bench(name: str, encoders: dict[str, Embedder]) -> None:
    examples, oos, queries = load_set(name)
    everything = [*examples, *((q, OUT_OF_SCOPE) for q in oos)]
    started = time.perf_counter()
    questions = [q for q, _ in everything]
    asked = [str(q["query"]) for q in queries]
    oos_share = sum(not q["accept"] for q in queries) / max(len(queries), 1)
    embedded = {k: (e.embed(questions), e.embed(asked)) for k, e in encoders.items()}
    console.print(
        f"{name}: {len(examples)} phrasings, {len(oos)} out-of-scope, {len(queries)} dev "
        f"queries ({oos_share:.0%} out of scope); embedded in "
        f"{time.perf_counter() - started:.0f} s"
    )
    table = Table(title=f"{name}: routers tuned like a compile, answering the dev queries")
    for column in (
        "router",
        "tuned rule",
        "coverage",
        "wrong",
        "expected wrong",
        "rejection",
        "coverage x",
        "dev-best coverage (wrong ≤ target)",
        "fit s",
    ):
        table.add_column(column, justify="left" if column == "router" else "right")
    rows: list[Row] = []
    row = {q: i for i, q in enumerate(questions)}
    plain: list[tuple[str, str, Fit | RouterPolicy]] = [
        (n, source, fit) for n, (fit, source) in VARIANTS.items()
    ]
    compiled = [(n, source, policy) for n, (policy, source) in COMPILED.items()]
    for label, source, how in [*plain, *compiled]:
        variant = label
        started = time.perf_counter()
        train_vectors, answer_vectors = embedded[source]
        if isinstance(how, RouterPolicy):
            policy = how

            def encoder(qs: Sequence[str], vs: Floats = train_vectors) -> Floats:
                return vs[[row[q] for q in qs]]

            model = train_router(
                examples, oos, encoder=encoder, encoder_id=encoders[source].model_id, policy=policy
            )
            rule = Thresholds(
                model.header.threshold,
                model.header.agreed_threshold or model.header.threshold,
                model.header.metrics,
                model.header.min_similarity,
            )
            heads = True
            final: Judge = partial(judge, model)
            variant = f"{variant}, words {model.header.words_weight:g}"
        else:
            fit = how

            def probe(train: Sequence[tuple[str, str]], vs: Floats | None, fit: Fit = fit) -> Judge:
                assert vs is not None
                return fit(train, vs, PROBE_ITERATIONS)

            held = held_out_verdicts(everything, train_vectors, probe)
            rule = tune_rule(held)
            final = fit(everything, train_vectors, 300)
            heads = any(h.agreed for h in held)
        seconds = time.perf_counter() - started
        verdicts = [final(q, v) for q, v in zip(asked, answer_vectors, strict=True)]
        got = figures(verdicts, queries, rule)
        expected = estimated_wrong_rate(rule.metrics, oos_share)
        dev_best = best_on_dev(verdicts, queries, wrong_target(name), rule.similarity)
        rows.append((variant, rule, got, expected, dev_best, seconds, heads))
        console.print(
            f"  {variant}: coverage {got.coverage:.1%}, wrong {got.wrong_rate:.1%} "
            f"(expected {_pct(expected)}), rejection {_pct(got.rejection)}, {seconds:.0f} s"
        )
    shipped = rows[-1][2].coverage
    for variant, rule, got, expected, (t, best), seconds, heads in rows:
        agreed = f", agreed {rule.agreed:.2f}" if heads and rule.agreed < rule.threshold else ""
        gate = "" if rule.similarity is None else f", similarity {rule.similarity:.2f}"
        table.add_row(
            variant,
            f"{rule.threshold:.2f}{agreed}{gate}",
            _pct(got.coverage),
            _pct(got.wrong_rate),
            _pct(expected),
            _pct(got.rejection),
            f"x{got.coverage / shipped:.2f}" if shipped else "-",
            f"{best.coverage:.1%} at {t:.2f} (wrong {best.wrong_rate:.1%})"
            if best is not None
            else "none within the target",
            f"{seconds:.0f}",
        )
    console.print(table)
    console.print(against_target(name, rows[-1][2]) + " (shipped router)", highlight=False)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--sets", default="clinc150,banking77,banking77_oos")
    args = parser.parse_args(argv)
    names = [n.strip() for n in args.sets.split(",") if n.strip()]
    unknown = [n for n in names if n not in FAQ_SETS]
    if unknown:
        parser.error(f"unknown or non-FAQ sets {unknown}; choose from {list(FAQ_SETS)}")
    missing = [n for n in names if not (EVAL / n).is_dir()]
    if missing:
        raise SystemExit(f"{', '.join(missing)} not found under {EVAL}")
    encoders: dict[str, Embedder] = {
        "sentence": MiniLMEmbedder(),
        "layers": MiniLMEmbedder(layers=ROUTER_LAYERS),
        "mpnet": MPNetEmbedder(),
        "mpnet-int8": MPNetEmbedder(precision="int8"),
    }
    encoder_cost()
    for name in names:
        bench(name, encoders)


def encoder_cost(rounds: int = 5, questions: int = 60, batch: int = 8) -> None:
    """What a question costs each encoder at the service's settings (no spinning threads),
    interleaved in ``rounds``: p50 and p99 of one question at a time, and questions per second
    in batches of ``batch`` (the service's encoder batching at that concurrency)."""
    asked = [
        str(json.loads(line)["query"])
        for name in FAQ_SETS
        for line in (EVAL / name / "queries_dev.jsonl").read_text("utf-8").splitlines()[:questions]
    ]
    encoders: dict[str, Embedder] = {
        "MiniLM sentence vector": MiniLMEmbedder(spin=False),
        "MiniLM layers 4-6": MiniLMEmbedder(spin=False, layers=ROUTER_LAYERS),
        "MPNet (fp32)": MPNetEmbedder(spin=False),
        "MPNet (int8)": MPNetEmbedder(spin=False, precision="int8"),
    }
    single: dict[str, list[float]] = {name: [] for name in encoders}
    batched: dict[str, list[float]] = {name: [] for name in encoders}
    for _ in range(rounds):
        for name, encoder in encoders.items():
            for question in asked:
                started = time.perf_counter()
                encoder.embed([question])
                single[name].append(time.perf_counter() - started)
            started = time.perf_counter()
            for i in range(0, len(asked), batch):
                encoder.embed(asked[i : i + batch])
            batched[name].append(len(asked) / (time.perf_counter() - started))
    table = Table(title=f"encoder cost per question ({len(asked)} dev questions x {rounds} rounds)")
    for column in ("encoder", "p50 ms (one at a time)", "p99 ms", f"questions/s in {batch}s"):
        table.add_column(column, justify="left" if column == "encoder" else "right")
    for name in encoders:
        p50, p99 = (float(np.percentile(single[name], q)) * 1000 for q in (50, 99))
        table.add_row(name, f"{p50:.1f}", f"{p99:.1f}", f"{np.median(batched[name]):.0f}")
    console.print(table)


if __name__ == "__main__":
    main()
