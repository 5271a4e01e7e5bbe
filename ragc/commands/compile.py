"""``ragc compile`` and ``ragc eval``: run the compiler, and measure what it compiled."""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import msgspec
import typer
from pydantic import ValidationError
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from ragc.commands._base import (
    JsonOpt,
    ModelOpt,
    OosShareOpt,
    ProviderOpt,
    SimilarityGateOpt,
    StoreOpt,
    WrongTargetOpt,
    app,
    console,
    emit,
    err,
    fails_cleanly,
)
from ragc.prefect_server import temporary_prefect_server
from schemas.errors import InvalidInputError
from schemas.policies import AutoFaqPolicy, ReviewPolicy, RouterPolicy
from schemas.settings import Environment
from stores import store_scheme

if TYPE_CHECKING:
    from schemas.evaluation import EvalReport
    from schemas.manifest import DuplicateGroup


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


def _bad_option(command: str, exc: ValidationError) -> InvalidInputError:
    """The first problem pydantic found with a command's options, as one clear error."""
    problem = exc.errors()[0]
    where = ".".join(map(str, problem["loc"]))
    return InvalidInputError(f"bad {command} option {where}: {problem['msg']}")


ROUTER, REVIEW, AUTO_FAQ = RouterPolicy(), ReviewPolicy(), AutoFaqPolicy()
"""The policies' defaults, which the options show and pass on."""


@app.command(name="compile")
@fails_cleanly
def compile_(
    knowledge: Annotated[Path, typer.Argument(help="Knowledge folder.")],
    store: StoreOpt = "",
    version: Annotated[str | None, typer.Option(help="Version label (default: next v{n}).")] = None,
    publish: Annotated[
        bool, typer.Option("--publish/--no-publish", help="Publish and activate if gates pass.")
    ] = False,
    provider: ProviderOpt = "offline",
    model: ModelOpt = None,
    review: Annotated[str, typer.Option(help="Review policy: auto, sample or full.")] = REVIEW.mode,
    threshold: Annotated[
        float, typer.Option(help="Verification score for automatic approval.")
    ] = REVIEW.threshold,
    auto_faq: Annotated[
        int,
        typer.Option(
            "--auto-faq",
            min=0,
            help="Draft answers, held for review, for logged misses asked N times or more "
            "(0: none).",
        ),
    ] = AUTO_FAQ.min_asked,
    regression: Annotated[
        Path | None, typer.Option(help="Labelled queries for the regression gate.")
    ] = None,
    wrong_target: WrongTargetOpt = ROUTER.wrong_target,
    oos_share: OosShareOpt = ROUTER.oos_share,
    similarity_gate: SimilarityGateOpt = ROUTER.similarity_gate,
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
    url = store or Environment.read().store
    store_scheme(url)  # a bad URL fails now, not after the imports
    with temporary_prefect_server() as server:
        # Imported while the server starts: the two take about as long.
        from flows.compile import CompileParams, compile_knowledge  # noqa: PLC0415 - heavy

        try:
            params = CompileParams(
                knowledge=str(knowledge),
                store=url,
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
            raise _bad_option("compile", exc) from exc
        if server is not None:
            server.ready()
        with _compile_progress(enabled=not as_json):
            result = compile_knowledge(params)
    if as_json:
        emit(result, True, "")
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


@app.command(name="eval")
@fails_cleanly
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
    wrong_target: WrongTargetOpt = ROUTER.wrong_target,
    oos_share: OosShareOpt = ROUTER.oos_share,
    similarity_gate: SimilarityGateOpt = ROUTER.similarity_gate,
    provider: ProviderOpt = "offline",
    model: ModelOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Measure coverage, wrong answers, rejection and latency per layer on labelled queries,
    through the same ladder the service runs."""
    _prefect_defaults()
    try:
        policy = RouterPolicy(
            wrong_target=wrong_target, oos_share=oos_share, similarity_gate=similarity_gate
        )
    except ValidationError as exc:
        raise _bad_option("eval", exc) from exc
    if store:
        store_scheme(store)  # a bad URL fails now, not after the imports
    with temporary_prefect_server() as server:
        from ragc.evaluate import run_eval  # noqa: PLC0415 - heavy, imported while the server starts

        if server is not None:
            server.ready()
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
        emit(figures_json, True, "")
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
