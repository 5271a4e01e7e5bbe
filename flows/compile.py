"""The ``compile-knowledge`` flow: a knowledge folder in, a gated snapshot (maybe published) out.

Stages run as Prefect tasks in order; the flow only wires them together and times them. Each gate
then runs as its own task (``gate-regression``, ...), Failed when the snapshot fails it; the gates
table (and a failed regression's cases) becomes the run's ``compile-gates`` artifact, and a failed
gate fails the flow run before the publish task, so a failed compile never changes what is
served. A compile that ends writes its summary as the ``compile-summary`` artifact.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Final, Literal, TypeVar

import msgspec
from prefect import flow
from pydantic import BaseModel, Field

from flows._artifacts import publish_gates, publish_summary
from flows._defaults import store_url
from schemas.build import Entry, SkippedSource, Usage
from schemas.errors import InvalidInputError
from schemas.frames import (
    ChunkFrame,
    EntryFrame,
    QuestionFrame,
    SourceFrame,
    TopicFrame,
    validate_records,
)
from schemas.manifest import DuplicateGroup, GateResult
from schemas.settings import Environment
from tasks.answer import generate_answers
from tasks.artifacts import SnapshotInputs
from tasks.auto_faq import AutoFaqPolicy, draft_miss_questions
from tasks.chunk import chunk_documents
from tasks.duplicates import detect_duplicates
from tasks.gates import check_gates, enforce_gate, gate_snapshot, load_cases
from tasks.index import index_chunks
from tasks.ingest import MAX_BYTES, ingest_sources, regression_path
from tasks.publish import compile_artifacts, open_resources, publish_snapshot
from tasks.review import ReviewPolicy, review_answers
from tasks.router import RouterPolicy
from tasks.sources import fetch_knowledge
from tasks.synthesize import synthesize_questions, writes_questions
from tasks.topics import discover_topics
from tasks.verify import verify_answers

__all__ = ["STAGES", "CompileParams", "CompileResult", "compile_knowledge", "stage_progress"]

T = TypeVar("T")


class CompileParams(BaseModel):
    """Parameters of one compile (also the deployment's parameters)."""

    knowledge: str = Field(
        description="Folder of documents and FAQ files, or the name of a knowledge source in "
        "the sources file ($RAGC_SOURCES: a folder, a git repository or an fsspec URL)."
    )
    store: str = Field(
        default_factory=store_url,
        description="Snapshot store URL (default: $RAGC_STORE, else the embedded SQLite file).",
    )
    version: str | None = Field(
        default=None, description="Version label; next free v{n} when absent."
    )
    publish: bool = Field(default=False, description="Publish and activate when every gate passes.")
    provider: Literal["offline", "anthropic", "openai", "azure", "local"] = "offline"
    model: str | None = None
    review: ReviewPolicy = ReviewPolicy()
    auto_faq: AutoFaqPolicy = AutoFaqPolicy()
    router: RouterPolicy = RouterPolicy()
    build_dir: str = Field(default=".ragc/build", description="Build cache and snapshot folders.")
    regression: str | None = Field(
        default=None, description="Labelled queries (JSONL) for the gate."
    )
    max_bytes: int = MAX_BYTES
    archive: str | None = Field(
        default_factory=lambda: Environment.read().archive_url,
        description="Archive (local path or fsspec URL) that published snapshots are copied to "
        "as {archive}/{version} (default: $RAGC_ARCHIVE_URL).",
    )


class StageTime(msgspec.Struct, frozen=True):
    stage: str
    seconds: float


class CompileResult(msgspec.Struct, frozen=True, kw_only=True):
    """What a compile produced."""

    version: str
    published: bool
    snapshot_dir: str
    counts: dict[str, int]
    gates: tuple[GateResult, ...]
    stages: tuple[StageTime, ...]
    skipped: tuple[SkippedSource, ...]
    provider_calls: dict[str, int]
    """Provider calls that generated (missed the build cache), per stage."""
    provider_reused: dict[str, int]
    usage: tuple[Usage, ...] = ()
    """Tokens the provider spent per stage (input, output, prompt-cache reads and writes)."""
    entries: dict[str, int]
    """Entries by review status."""
    duplicates: tuple[DuplicateGroup, ...] = ()
    """Entries that ask the same question, each group compiled as its canonical entry; a
    ``conflict`` group's differing members wait in the review queue."""
    auto_faq: dict[str, int] = {}
    """Auto-FAQ drafts (questions from the miss log) by review status: ``pending`` ones wait
    for a person, ``approved`` ones are served, ``rejected`` ones found no answer or were
    turned down."""
    seconds: float


STAGES: Final = (
    "fetch",
    "ingest",
    "chunk",
    "index",
    "topics",
    "synthesize",
    "auto-faq",
    "answer",
    "verify",
    "duplicates",
    "review",
    "compile",
    "gates",
    "publish",
)
StageListener = Callable[[str, float | None], None]
"""Called with a stage name when it starts (``None``) and with its seconds when it ends."""
_listeners: list[StageListener] = []


@contextmanager
def stage_progress(listener: StageListener) -> Iterator[None]:
    """Report stage starts and ends of compiles run in this process to ``listener``."""
    _listeners.append(listener)
    try:
        yield
    finally:
        _listeners.remove(listener)


def _run(times: list[StageTime], stage: str, call: Callable[[], T]) -> T:
    for listener in _listeners:
        listener(stage, None)
    started = time.perf_counter()
    result = call()
    seconds = round(time.perf_counter() - started, 3)
    times.append(StageTime(stage, seconds))
    for listener in _listeners:
        listener(stage, seconds)
    return result


@flow(name="compile-knowledge", log_prints=True, validate_parameters=True)
def compile_knowledge(params: CompileParams) -> CompileResult:
    """Fetch the knowledge (a folder, or a named source), ingest, chunk, index, discover
    topics, synthesize, answer, verify, group duplicates, review, compile, gate and (with
    ``publish``) publish a new snapshot version."""
    started = time.perf_counter()
    times: list[StageTime] = []
    root = Path(_run(times, "fetch", lambda: fetch_knowledge(params.knowledge, params.build_dir)))
    with open_resources(
        build_dir=params.build_dir,
        store_url=params.store,
        provider=params.provider,
        model=params.model,
        version=params.version,
    ) as res:
        report = _run(times, "ingest", lambda: ingest_sources(str(root), params.max_bytes))
        if not any(s.kind not in ("out_of_scope",) for s in report.sources):
            reasons = "; ".join(f"{s.path}: {s.reason}" for s in report.skipped) or "no files"
            raise InvalidInputError(
                f"nothing in {root} can be compiled ({reasons})",
                hint="add markdown, HTML, text, PDF, DOCX or faq.jsonl files",
            )
        validate_records("ingest", report.sources, SourceFrame)
        chunks = _run(times, "chunk", lambda: chunk_documents(str(root), report, res.cache))
        validate_records("chunk", chunks, ChunkFrame)
        index = _run(times, "index", lambda: index_chunks(res.embedder, chunks, res.cache))
        try:
            topics = _run(times, "topics", lambda: discover_topics(chunks, index))
            validate_records("topics", topics, TopicFrame)
            questions = _run(
                times,
                "synthesize",
                lambda: synthesize_questions(
                    report, chunks, topics, res.provider, index, res.cache
                ),
            )
            questions += _run(
                times,
                "auto-faq",
                lambda: draft_miss_questions(params.store, questions, params.auto_faq),
            )
            validate_records("synthesize", questions, QuestionFrame)
            drafts = _run(
                times,
                "answer",
                lambda: generate_answers(report, questions, index, res.provider, res.cache),
            )
            validate_records("answer", drafts, EntryFrame)
            verified = _run(times, "verify", lambda: verify_answers(drafts, index, res.provider))
            validate_records("verify", verified, EntryFrame)
        finally:
            index.close()
        duplicates = _run(
            times,
            "duplicates",
            lambda: detect_duplicates(verified, questions, chunks, res.embedder, res.cache),
        )
        entries: list[Entry] = _run(
            times,
            "review",
            lambda: review_answers(verified, params.review, params.store, duplicates.groups),
        )
        validate_records("review", entries, EntryFrame)
        snapshot = _run(
            times,
            "compile",
            lambda: compile_artifacts(
                SnapshotInputs(
                    version=res.version,
                    parent=res.parent,
                    report=report,
                    chunks=chunks,
                    topics=topics,
                    entries=entries,
                    duplicates=duplicates.groups,
                    model_phrasings=writes_questions(res.provider),
                ),
                res.router_embedder,
                res.cache,
                params.router,
            ),
        )
        regression = Path(params.regression) if params.regression else regression_path(root)
        cases = load_cases(regression) if regression else []
        gates = _run(
            times,
            "gates",
            lambda: gate_snapshot(
                snapshot,
                entries,
                cases,
                res.provider,
                res.router_embedder,
                params.review.threshold,
                params.store,
            ),
        )
        sealed = msgspec.structs.replace(
            snapshot, manifest=msgspec.structs.replace(snapshot.manifest, gates=tuple(gates))
        )
        folder = Path(params.build_dir) / "snapshots" / res.version
        for gate in gates:  # each gate its own task run, Failed when the snapshot fails it
            enforce_gate(gate, return_state=True)
        publish_gates(res.version, gates)
        check_gates(gates)
        published = _run(
            times,
            "publish",
            lambda: publish_snapshot(sealed, folder, res.store_url, params.publish, params.archive),
        )
        statuses: dict[str, int] = {}
        drafted: dict[str, int] = {}
        for entry in entries:
            statuses[entry.status] = statuses.get(entry.status, 0) + 1
            if entry.origin == "miss":
                drafted[entry.status] = drafted.get(entry.status, 0) + 1
        result = CompileResult(
            version=res.version,
            published=published,
            snapshot_dir=str(folder),
            counts=sealed.manifest.counts,
            gates=tuple(gates),
            stages=tuple(times),
            skipped=report.skipped,
            provider_calls=dict(res.provider.generated),
            provider_reused=dict(res.provider.reused),
            usage=tuple(u for u in res.provider.usage() if u.calls),
            entries=statuses,
            duplicates=sealed.manifest.duplicates,
            auto_faq=drafted,
            seconds=round(time.perf_counter() - started, 3),
        )
        publish_summary(result)
        return result
