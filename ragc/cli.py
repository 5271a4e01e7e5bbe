"""The ``ragc`` command line: one function per command, no logic of its own."""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal, ParamSpec, TypeVar

import msgspec
import typer
from pydantic import ValidationError
from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from schemas.errors import InvalidInputError, RagcError
from schemas.rollout import RolloutRecord
from schemas.settings import Environment
from stores import DEFAULT_STORE_URL, SnapshotStore, open_store, read_snapshot

app = typer.Typer(
    name="ragc",
    help="Compile static knowledge into versioned answer snapshots and serve them.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console()
err = Console(stderr=True)

if TYPE_CHECKING:
    from schemas.evaluation import EvalReport
    from schemas.manifest import DuplicateGroup
    from stores.review import ReviewQueue
    from stores.warm import WarmTier

P = ParamSpec("P")
R = TypeVar("R")

StoreOpt = Annotated[
    str,
    typer.Option(
        "--store",
        envvar="RAGC_STORE",
        help=f"Snapshot store URL (default {DEFAULT_STORE_URL}).",
        show_default=False,
    ),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")]
ProviderOpt = Annotated[
    str,
    typer.Option(help="Language-model provider: offline, anthropic, openai, azure or local."),
]
ModelOpt = Annotated[
    str | None,
    typer.Option(help="Model for the provider (a GGUF path for local; default: its own)."),
]
WrongTargetOpt = Annotated[
    float,
    typer.Option(help="Router: highest expected share of wrong answers among those served."),
]
OosShareOpt = Annotated[
    float,
    typer.Option(help="Router: share of questions assumed to be outside the knowledge."),
]
SimilarityGateOpt = Annotated[
    bool,
    typer.Option(
        "--similarity-gate",
        help="Router: also tune a minimum similarity to the matched entry's phrasings "
        "(for traffic with many near misses of the knowledge).",
    ),
]


def _fails_cleanly(command: Callable[P, R]) -> Callable[P, R]:
    """Turn a :class:`RagcError` into one clear line on stderr and exit status 1."""

    @functools.wraps(command)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return command(*args, **kwargs)
        except RagcError as exc:
            err.print(f"[bold red]error:[/] {exc.one_line()}", highlight=False, soft_wrap=True)
            raise typer.Exit(1) from None

    return wrapper


def _store(url: str | None) -> SnapshotStore:
    return open_store(url or Environment.read().store)


def _emit(value: object, as_json: bool, text: str) -> None:
    if as_json:
        sys.stdout.write(msgspec.json.encode(value).decode() + "\n")
    else:
        console.print(text, highlight=False)


def _describe(record: RolloutRecord) -> str:
    if record.canary:
        return f"stable {record.stable}, canary {record.canary} at {record.percent:g}%"
    return f"stable {record.stable or '(none)'}"


@app.command()
@_fails_cleanly
def versions(store: StoreOpt = "", as_json: JsonOpt = False) -> None:
    """List published versions with their pointers."""
    s = _store(store)
    try:
        listed = s.versions()
    finally:
        s.close()
    if as_json:
        _emit(listed, True, "")
        return
    table = Table("version", "created", "exact", "intents", "topics", "state")
    for info in listed:
        flags = [f for f, on in (("active", info.active), ("canary", info.canary)) if on]
        flags += [f"pinned:{t}" for t in info.pinned_by]
        table.add_row(
            info.version,
            info.created_at,
            str(info.counts.get("exact", 0)),
            str(info.counts.get("intents", 0)),
            str(info.counts.get("topics", 0)),
            " ".join(flags),
        )
    console.print(table if listed else "no versions published yet")


@app.command()
@_fails_cleanly
def publish(
    snapshot: Annotated[
        Path | None, typer.Argument(help="Snapshot folder (manifest.json + JSONL).")
    ] = None,
    source: Annotated[
        str | None,
        typer.Option(
            "--from",
            help="Snapshot folder as a local path or fsspec URL (s3://bucket/archive/v3, ...), "
            "instead of SNAPSHOT.",
            show_default=False,
        ),
    ] = None,
    activate: Annotated[
        bool, typer.Option("--activate/--no-activate", help="Make it the active version.")
    ] = False,
    store: StoreOpt = "",
    as_json: JsonOpt = False,
) -> None:
    """Publish a snapshot folder (or --from URL) as a new immutable version."""
    where = source if source is not None else snapshot
    if where is None or (snapshot is not None and source is not None):
        err.print("[bold red]error:[/] give a SNAPSHOT folder or --from URL (one)", highlight=False)
        raise typer.Exit(2)
    loaded = read_snapshot(where)
    s = _store(store)
    try:
        info = s.publish(loaded, activate=activate)
    finally:
        s.close()
    _emit(info, as_json, f"published {info.version}" + (" (active)" if info.active else ""))


@app.command()
@_fails_cleanly
def rollout(
    version: Annotated[str, typer.Argument(help="Version to roll out.")],
    percent: Annotated[
        float, typer.Option("--percent", "-p", min=0, max=100, help="Share of sessions.")
    ] = 100.0,
    store: StoreOpt = "",
    as_json: JsonOpt = False,
) -> None:
    """Serve VERSION to a share of sessions as a canary; 100 makes it the active version."""
    s = _store(store)
    try:
        record = s.rollout(version, percent)
    finally:
        s.close()
    _emit(record, as_json, _describe(record))


@app.command()
@_fails_cleanly
def rollback(store: StoreOpt = "", as_json: JsonOpt = False) -> None:
    """End a running canary, or return to the previously active version."""
    s = _store(store)
    try:
        record = s.rollback()
    finally:
        s.close()
    _emit(record, as_json, _describe(record))


@app.command()
@_fails_cleanly
def pin(
    tenant: Annotated[str, typer.Argument(help="Tenant id.")],
    version: Annotated[str | None, typer.Argument(help="Version to pin the tenant to.")] = None,
    clear: Annotated[bool, typer.Option("--clear", help="Remove the tenant's pin.")] = False,
    store: StoreOpt = "",
    as_json: JsonOpt = False,
) -> None:
    """Pin a tenant to one version (or --clear the pin)."""
    if (version is None) == (not clear):
        err.print("[bold red]error:[/] give a VERSION to pin, or --clear to unpin", highlight=False)
        raise typer.Exit(2)
    s = _store(store)
    try:
        s.pin(tenant, None if clear else version)
    finally:
        s.close()
    message = f"unpinned {tenant}" if clear else f"pinned {tenant} to {version}"
    _emit({"tenant": tenant, "version": None if clear else version}, as_json, message)


@app.command()
@_fails_cleanly
def gc(
    keep: Annotated[int, typer.Option("--keep", min=1, help="Newest versions to keep.")] = 3,
    store: StoreOpt = "",
    as_json: JsonOpt = False,
) -> None:
    """Delete old versions (never the stable, canary or a pinned one) and dead partial loads."""
    s = _store(store)
    try:
        report = s.gc(keep)
    finally:
        s.close()
    removed = ", ".join((*report.removed, *report.partial_removed)) or "nothing"
    _emit(report, as_json, f"removed {removed}; kept {', '.join(report.kept) or 'nothing'}")


def _prefect_defaults() -> None:
    """Quiet, offline Prefect for CLI runs (explicit settings in the environment win)."""
    for name, value in (
        ("PREFECT_SERVER_ANALYTICS_ENABLED", "false"),
        ("DO_NOT_TRACK", "1"),
        ("PREFECT_LOGGING_LEVEL", "CRITICAL"),  # errors reach the user as one line
        ("UNSTRUCTURED_DISABLE_NOTICE", "1"),
        ("TQDM_DISABLE", "1"),
    ):
        os.environ.setdefault(name, value)


@contextmanager
def _compile_progress(*, enabled: bool) -> Iterator[None]:
    """A live stage-by-stage progress display of a compile (rich)."""
    if not enabled:
        yield
        return
    from flows.compile import STAGES, stage_progress  # noqa: PLC0415 - heavy

    columns = (SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), TimeElapsedColumn())
    with Progress(*columns, console=err, transient=True) as progress:
        overall = progress.add_task("compiling", total=len(STAGES))

        def show(stage: str, seconds: float | None) -> None:
            if seconds is None:
                progress.update(overall, description=f"{stage} …")
            else:
                progress.advance(overall)

        with stage_progress(show):
            yield


@app.command(name="compile")
@_fails_cleanly
def compile_(
    knowledge: Annotated[Path, typer.Argument(help="Knowledge folder.")],
    store: StoreOpt = "",
    version: Annotated[str | None, typer.Option(help="Version label (default: next v{n}).")] = None,
    publish: Annotated[
        bool, typer.Option("--publish/--no-publish", help="Publish and activate if gates pass.")
    ] = False,
    provider: ProviderOpt = "offline",
    model: ModelOpt = None,
    review: Annotated[str, typer.Option(help="Review policy: auto, sample or full.")] = "auto",
    threshold: Annotated[
        float, typer.Option(help="Verification score for automatic approval.")
    ] = 0.8,
    auto_faq: Annotated[
        int,
        typer.Option(
            "--auto-faq",
            min=0,
            help="Draft answers, held for review, for logged misses asked N times or more "
            "(0: none).",
        ),
    ] = 2,
    regression: Annotated[
        Path | None, typer.Option(help="Labelled queries for the regression gate.")
    ] = None,
    wrong_target: WrongTargetOpt = 0.02,
    oos_share: OosShareOpt = 0.05,
    similarity_gate: SimilarityGateOpt = False,
    build_dir: Annotated[Path, typer.Option(help="Build cache and snapshot folders.")] = Path(
        ".ragc/build"
    ),
    archive: Annotated[
        str,
        typer.Option(
            "--archive",
            envvar="RAGC_ARCHIVE_URL",
            help="Copy a published snapshot to ARCHIVE/VERSION (local path or fsspec URL).",
            show_default=False,
        ),
    ] = "",
    as_json: JsonOpt = False,
) -> None:
    """Compile a knowledge folder into a gated snapshot (and publish it with --publish)."""
    _prefect_defaults()
    from flows.compile import CompileParams, compile_knowledge  # noqa: PLC0415 - heavy
    from tasks.auto_faq import AutoFaqPolicy  # noqa: PLC0415 - heavy
    from tasks.review import ReviewPolicy  # noqa: PLC0415 - heavy
    from tasks.router import RouterPolicy  # noqa: PLC0415 - heavy

    try:
        params = CompileParams(
            knowledge=str(knowledge),
            store=store or Environment.read().store,
            version=version,
            publish=publish,
            provider=provider,  # type: ignore[arg-type]
            model=model,
            review=ReviewPolicy(mode=review, threshold=threshold),  # type: ignore[arg-type]
            auto_faq=AutoFaqPolicy(min_asked=auto_faq),
            router=RouterPolicy(
                wrong_target=wrong_target, oos_share=oos_share, similarity_gate=similarity_gate
            ),
            build_dir=str(build_dir),
            regression=str(regression) if regression else None,
            archive=archive or None,
        )
    except ValidationError as exc:
        problem = exc.errors()[0]
        raise InvalidInputError(
            f"bad compile option {'.'.join(map(str, problem['loc']))}: {problem['msg']}"
        ) from exc
    with _compile_progress(enabled=not as_json):
        result = compile_knowledge(params)
    if as_json:
        _emit(result, True, "")
        return
    summary = Table("stage", "seconds", title=f"ragc compile — {result.version}")
    for stage in result.stages:
        summary.add_row(stage.stage, f"{stage.seconds:.2f}")
    summary.add_row("[bold]total", f"[bold]{result.seconds:.2f}")
    console.print(summary)
    gates = Table("gate", "result", "detail")
    for gate in result.gates:
        gates.add_row(gate.name, "pass" if gate.passed else "[red]FAIL", gate.detail)
    console.print(gates)
    for skip in result.skipped:
        console.print(f"[yellow]skipped[/] {skip.path}: {skip.reason}", highlight=False)
    generated = sum(result.provider_calls.values())
    reused = sum(result.provider_reused.values())
    console.print(
        f"entries {result.entries}; artifacts {result.counts}; provider calls: {generated} "
        f"generated, {reused} reused from cache",
        highlight=False,
    )
    _print_duplicates(result.duplicates)
    if result.auto_faq:
        held = result.auto_faq.get("pending", 0)
        console.print(
            f"auto-FAQ drafts for frequent misses: {sum(result.auto_faq.values())} "
            f"({held} waiting in `ragc review list`)",
            highlight=False,
        )
    where = "published and active" if result.published else f"written to {result.snapshot_dir}"
    console.print(f"[bold green]{result.version}[/] {where}", highlight=False)


def _print_duplicates(groups: Sequence[DuplicateGroup]) -> None:
    """The compile's duplicate groups: one line each, then its members."""
    if not groups:
        return
    conflicts = sum(g.verdict == "conflict" for g in groups)
    console.print(
        f"duplicate groups (entries asking the same question): {len(groups)}; "
        f"{len(groups) - conflicts} with the same answer, {conflicts} conflicting",
        highlight=False,
    )
    for group in groups:
        console.print(
            f"  {group.id} {group.verdict} ({group.reason}) → {group.canonical}", highlight=False
        )
        for member in group.members:
            console.print(
                f"    {member.status:<9} {member.section.ref}  {member.question!r}"
                + (
                    ""
                    if member.status == "canonical"
                    else f"  (question {member.question_similarity:.2f}, "
                    f"answer {member.answer_similarity:.2f})"
                ),
                highlight=False,
            )


review_app = typer.Typer(help="The review queue: list, approve, reject or edit answers.")
app.add_typer(review_app, name="review")
ByOpt = Annotated[str, typer.Option("--by", help="Reviewer name (default: $USER).")]


def _warm(store: str | None) -> WarmTier:
    """The warm tier of ``store`` (default ``RAGC_STORE``), with ``RAGC_WARM_DSN``."""
    from stores.warm import WarmTier  # noqa: PLC0415

    settings = Environment.read()
    return WarmTier(store or settings.store, settings.warm_dsn)


def _queue(store: str | None) -> ReviewQueue:
    """The review queue: the warm tier's (``RAGC_WARM_DSN``), else the SQLite store's."""
    warm = _warm(store)
    return warm.require(warm.review_queue(), "the review queue")


@review_app.command("list")
@_fails_cleanly
def review_list(
    status: Annotated[
        str | None, typer.Option(help="pending, approved or rejected (default: all).")
    ] = "pending",
    store: StoreOpt = "",
    as_json: JsonOpt = False,
) -> None:
    """List answers in the review queue."""
    if status not in (None, "pending", "approved", "rejected"):
        raise InvalidInputError(f"unknown status {status!r}", hint="pending, approved or rejected")
    queue = _queue(store)
    try:
        items = queue.items(status)  # type: ignore[arg-type]
    finally:
        queue.close()
    if as_json:
        _emit(items, True, "")
        return
    table = Table("entry", "status", "score", "question", "answer", "why held")
    for item in items:
        table.add_row(
            item.entry_id,
            item.status,
            f"{item.score:.2f}",
            item.question,
            item.answer[:80],
            item.reason,
        )
    console.print(table if items else f"no {status or ''} answers in the review queue")


def _decide(
    entry_id: str,
    status: Literal["approved", "rejected"],
    by: str,
    store: str,
    answer: str | None,
    as_json: bool,
) -> None:
    queue = _queue(store)
    try:
        item = queue.decide(
            entry_id, status, reviewer=by or os.environ.get("USER", "cli"), answer=answer
        )
    finally:
        queue.close()
    _emit(
        item,
        as_json,
        f"{item.entry_id}: {item.status} by {item.reviewer} (applies from the next compile)",
    )


@review_app.command("approve")
@_fails_cleanly
def review_approve(
    entry_id: Annotated[str, typer.Argument(help="Entry id.")],
    by: ByOpt = "",
    store: StoreOpt = "",
    as_json: JsonOpt = False,
) -> None:
    """Approve an answer; the next compile serves it."""
    _decide(entry_id, "approved", by, store, None, as_json)


@review_app.command("reject")
@_fails_cleanly
def review_reject(
    entry_id: Annotated[str, typer.Argument(help="Entry id.")],
    by: ByOpt = "",
    store: StoreOpt = "",
    as_json: JsonOpt = False,
) -> None:
    """Reject an answer; the next compile leaves it out."""
    _decide(entry_id, "rejected", by, store, None, as_json)


@review_app.command("edit")
@_fails_cleanly
def review_edit(
    entry_id: Annotated[str, typer.Argument(help="Entry id.")],
    answer: Annotated[str, typer.Option("--answer", help="The corrected answer text.")],
    by: ByOpt = "",
    store: StoreOpt = "",
    as_json: JsonOpt = False,
) -> None:
    """Replace an answer's text and approve it."""
    if not answer.strip():
        raise InvalidInputError("the edited answer is empty", hint="pass --answer 'text'")
    _decide(entry_id, "approved", by, store, answer.strip(), as_json)


@app.command()
@_fails_cleanly
def serve(
    store: StoreOpt = "",
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="Port to listen on.")] = 8000,
    workers: Annotated[int, typer.Option(min=1, help="Worker processes.")] = 1,
) -> None:
    """Serve the active snapshot over HTTP (Litestar on granian, uvloop)."""
    from granian import Granian  # noqa: PLC0415 - the server only when serving
    from granian.constants import Interfaces, Loops  # noqa: PLC0415

    from serving.settings import ServeSettings  # noqa: PLC0415

    os.environ["RAGC_STORE"] = store or Environment.read().store
    ServeSettings.from_env()  # fail here, in one line, on a bad setting
    probe = open_store(os.environ["RAGC_STORE"])
    probe.close()
    err.print(f"ragc serving {os.environ['RAGC_STORE']} on http://{host}:{port}", highlight=False)
    Granian(
        "serving.app:create_app_from_env",
        address=host,
        port=port,
        interface=Interfaces.ASGI,
        factory=True,
        workers=workers,
        loop=Loops.uvloop,
        log_access=False,
    ).serve()


@app.command()
@_fails_cleanly
def ask(
    question: Annotated[str, typer.Argument(help="The question.")],
    store: StoreOpt = "",
    tenant: Annotated[str | None, typer.Option(help="Tenant id.")] = None,
    language: Annotated[str | None, typer.Option(help="Language tag (default en).")] = None,
    session: Annotated[str | None, typer.Option(help="Session id (canary assignment).")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Answer one question in-process with the serving ladder."""
    from serving.service import AnswerService  # noqa: PLC0415
    from serving.settings import ServeSettings  # noqa: PLC0415

    s = _store(store)
    try:
        settings = ServeSettings.from_env()
        service = AnswerService(msgspec.structs.replace(settings, store=s.url), s)
        try:
            answer = service.answer(question, tenant=tenant, language=language, session=session)
        finally:
            service.close()
    finally:
        s.close()
    if as_json:
        _emit(answer, True, "")
        return
    console.print(answer.answer, highlight=False)
    cites = ", ".join(src.ref for src in answer.sources) or "none"
    console.print(
        f"[dim]{answer.layer} · {answer.entry_id or '-'} · {answer.version} · "
        f"confidence {answer.confidence:.2f} · sources: {cites}[/]",
        highlight=False,
    )


@app.command()
@_fails_cleanly
def misses(
    store: StoreOpt = "",
    tenant: Annotated[str | None, typer.Option(help="Only this tenant's misses.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=1000, help="Most frequent N.")] = 20,
    as_json: JsonOpt = False,
) -> None:
    """Questions answered with the fallback, most frequent first (fold them into the next
    compile: the frequent ones are auto-FAQ suggestions)."""
    warm = _warm(store)
    log = warm.require(warm.audit_log(), "the miss log")
    try:
        found = log.misses(tenant=tenant, limit=limit)
    finally:
        log.close()
    if as_json:
        _emit(found, True, "")
        return
    table = Table("count", "question", "best guess", "score", "tenants", "last seen")
    for miss in found:
        table.add_row(
            str(miss.count),
            miss.example,
            miss.best_guess or "-",
            f"{miss.best_score:.2f}",
            ",".join(miss.tenants) or "-",
            miss.last_seen,
        )
    console.print(table if found else "no misses logged")


@app.command(name="eval")
@_fails_cleanly
def eval_(
    queries: Annotated[Path, typer.Argument(help="Labelled queries (JSONL, eval format).")],
    knowledge: Annotated[
        Path, typer.Option("--knowledge", help="Knowledge folder (compiled first if needed).")
    ],
    store: Annotated[
        str,
        typer.Option(
            "--store", help="Store to compile into and answer from (default: one per folder)."
        ),
    ] = "",
    build_dir: Annotated[
        Path | None, typer.Option(help="Build cache (default: .ragc/eval/build).")
    ] = None,
    report: Annotated[Path | None, typer.Option("--report", help="Write an HTML report.")] = None,
    wrong_target: WrongTargetOpt = 0.02,
    oos_share: OosShareOpt = 0.05,
    similarity_gate: SimilarityGateOpt = False,
    provider: ProviderOpt = "offline",
    model: ModelOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Measure coverage, wrong answers, rejection and latency per layer on labelled queries,
    through the same ladder the service runs."""
    _prefect_defaults()
    from ragc.evaluate import run_eval  # noqa: PLC0415 - heavy
    from tasks.router import RouterPolicy  # noqa: PLC0415 - heavy

    try:
        policy = RouterPolicy(
            wrong_target=wrong_target, oos_share=oos_share, similarity_gate=similarity_gate
        )
    except ValidationError as exc:
        problem = exc.errors()[0]
        raise InvalidInputError(
            f"bad eval option {'.'.join(map(str, problem['loc']))}: {problem['msg']}"
        ) from exc
    with _compile_progress(enabled=not as_json):
        result = run_eval(
            queries,
            knowledge,
            store=store or None,
            build_dir=build_dir,
            report_path=report,
            policy=policy,
            provider=provider,
            model=model,
        )
    if as_json:
        figures_json = msgspec.to_builtins(result.report)
        figures_json["compile"] = msgspec.to_builtins(result.cost)
        _emit(figures_json, True, "")
        return
    figures = result.report
    table = Table(
        title=f"ragc eval — {queries} on {result.version}"
        + (" (compiled now)" if result.compiled else "")
    )
    table.add_column("figure")
    table.add_column("value", justify="right")
    table.add_row("queries", f"{figures.queries} ({figures.in_scope} in scope)")
    table.add_row("coverage", f"{figures.coverage:.1%}")
    table.add_row("wrong-answer rate", f"{figures.wrong_rate:.1%}")
    table.add_row("  the compile's estimate", _estimate(figures))
    table.add_row(
        "served an equivalent duplicate",
        f"{figures.duplicate_served}  ({result.duplicate_groups} duplicate groups, "
        f"{result.conflict_groups} conflicting)",
    )
    table.add_row("coverage, duplicates counted right", f"{figures.coverage_lenient:.1%}")
    table.add_row(
        "wrong-answer rate, duplicates counted right", f"{figures.wrong_rate_lenient:.1%}"
    )
    if figures.rejection is not None:
        table.add_row("out-of-scope rejection", f"{figures.rejection:.1%}")
    for kind, share in figures.rejection_by_type.items():
        table.add_row(f"  rejection, {kind}", f"{share:.1%}")
    for layer, share in figures.layer_share.items():
        table.add_row(
            f"layer {layer}",
            f"{share:.1%}  p50 {figures.latency_p50_ms[layer]:.2f} ms  "
            f"p99 {figures.latency_p99_ms[layer]:.2f} ms",
        )
    agreed = result.agreed_threshold
    table.add_row(
        "router threshold",
        f"{result.threshold}"
        + (
            f" ({agreed} when both heads agree)"
            if agreed is not None and result.threshold is not None and agreed < result.threshold
            else ""
        ),
    )
    if result.cost is not None:
        table.add_row(
            "compile",
            f"{result.cost.seconds:,.0f} s, {result.cost.input_tokens:,} input and "
            f"{result.cost.output_tokens:,} output tokens",
        )
    console.print(table)
    if report:
        console.print(f"report written to {report}", highlight=False)


def _estimate(figures: EvalReport) -> str:
    """The compile's expected wrong-answer rate, as the eval table shows it."""
    if figures.estimated_wrong_rate is None or figures.estimated_wrong_rate_here is None:
        return "none (the router was tuned without held-out verdicts)"
    return (
        f"{figures.estimated_wrong_rate:.1%} as tuned, {figures.estimated_wrong_rate_here:.1%} "
        f"at this file's out-of-scope share ({figures.estimate_basis})"
    )


# --- ragc db: the Postgres warm tier's schema -----------------------------------------------

models_app = typer.Typer(help="Local encoders: prepare them once per machine or image.")
app.add_typer(models_app, name="models")


@models_app.command("prepare")
def models_prepare(as_json: JsonOpt = False) -> None:
    """Convert all-mpnet-base-v2 (the router's encoder) into the model cache
    ($RAGC_MODEL_DIR, default ~/.cache/ragc/models) once; a server never converts."""
    from providers.mpnet import prepare_mpnet  # noqa: PLC0415 - heavy

    path = prepare_mpnet()
    _emit({"model": str(path)}, as_json, f"all-mpnet-base-v2 ready at {path}")


db_app = typer.Typer(help="The Postgres warm tier: schema migrations and their status.")
app.add_typer(db_app, name="db")
DsnOpt = Annotated[
    str,
    typer.Option(
        "--dsn",
        envvar="RAGC_WARM_DSN",
        help="Postgres DSN of the warm tier (postgresql://user:pass@host:5432/db).",
        show_default=False,
    ),
]


def _warm_dsn(dsn: str) -> str:
    if not dsn.strip():
        raise InvalidInputError(
            "no Postgres warm tier given", hint="pass --dsn postgresql://... or set RAGC_WARM_DSN"
        )
    return dsn.strip()


@db_app.command("upgrade")
@_fails_cleanly
def db_upgrade(dsn: DsnOpt = "", as_json: JsonOpt = False) -> None:
    """Apply pending migrations (idempotent; concurrent upgraders are safe)."""
    from stores.postgres import current_revision, migrate, redact_dsn  # noqa: PLC0415 - psycopg

    url = _warm_dsn(dsn)
    applied = migrate(url)
    revision = current_revision(url)
    done = f"applied {', '.join(applied)}" if applied else "up to date"
    _emit(
        {"dsn": redact_dsn(url), "applied": applied, "revision": revision},
        as_json,
        f"{done} (revision {revision}) at {redact_dsn(url)}",
    )


@db_app.command("status")
@_fails_cleanly
def db_status(dsn: DsnOpt = "", as_json: JsonOpt = False) -> None:
    """Show the warm tier's schema revision and any pending migrations."""
    from stores.postgres import migration_status  # noqa: PLC0415 - psycopg

    status = migration_status(_warm_dsn(dsn))
    if as_json:
        _emit(status, True, "")
        return
    console.print(
        f"{status.dsn}: revision {status.revision or '(none)'}, this ragc needs {status.expected}",
        highlight=False,
    )
    for migration in status.applied:
        changed = " [red](changed since applied)[/]" if migration.changed else ""
        console.print(f"  applied {migration.name} at {migration.applied_at}{changed}")
    for name in status.pending:
        console.print(f"  pending {name}", highlight=False)
    if status.pending:
        console.print("run `ragc db upgrade` to apply the pending migrations", highlight=False)
