"""``ragc eval``: compile a knowledge folder if needed, answer labelled queries, report figures."""

from __future__ import annotations

import hashlib
from pathlib import Path

import msgspec

from flows.compile import CompileParams, compile_knowledge
from providers import PROVIDERS, OfflineProvider
from ragc.report import render_report
from schemas.build import Usage
from schemas.errors import InvalidInputError
from schemas.evaluation import EvalReport, Outcome, evaluate, summarize, threshold_curve
from schemas.router import RouterModel
from serving.runtime import VersionCache
from stores import open_store
from tasks.artifacts import compiler_id
from tasks.gates import load_cases
from tasks.ingest import ingest_folder
from tasks.router import RouterPolicy

__all__ = ["CompileCost", "EvalResult", "run_eval"]


class CompileCost(msgspec.Struct, frozen=True, kw_only=True):
    """What the compile an eval ran cost: its wall time and the provider's tokens per stage
    (calls answered from the build cache spend none)."""

    seconds: float
    usage: tuple[Usage, ...] = ()

    @property
    def input_tokens(self) -> int:
        return sum(u.input_tokens for u in self.usage)

    @property
    def output_tokens(self) -> int:
        return sum(u.output_tokens for u in self.usage)


class EvalResult(msgspec.Struct, frozen=True, kw_only=True):
    version: str
    compiled: bool
    threshold: float | None
    agreed_threshold: float | None = None
    """The router's lower threshold for when both its heads pick the same entry."""
    report: EvalReport
    outcomes: list[Outcome]
    duplicate_groups: int = 0
    """Groups of entries asking the same question in the evaluated snapshot."""
    conflict_groups: int = 0
    """Those of them whose answers differ (members held for review)."""
    cost: CompileCost | None = None
    """The compile this eval ran (``None`` when the store was already up to date)."""


def _default_store(knowledge: Path, policy: RouterPolicy, provider: str = "offline") -> str:
    """One store per folder, router policy and provider, so a compile under another policy or
    by another provider is never mistaken for an up-to-date one."""
    identity = str(knowledge.resolve())
    if provider != "offline":
        identity += f"\x1fprovider={provider}"
    if policy != RouterPolicy():
        identity += f"\x1f{policy.wrong_target}\x1f{policy.oos_share}"
        if policy.similarity_gate:
            identity += "\x1fsimilarity-gate"
    digest = hashlib.sha256(identity.encode()).hexdigest()[:10]
    return f"sqlite:///.ragc/eval/{knowledge.resolve().name}-{digest}.db"


def _up_to_date(url: str, knowledge: Path) -> str | None:
    """The active version when it was compiled from exactly the folder's current files."""
    store = open_store(url)
    try:
        active = store.active_version()
        if active is None:
            return None
        manifest = store.manifest(active)
        if manifest.compiler != compiler_id():
            return None
        compiled = {(s.path, s.sha256) for s in manifest.sources}
    finally:
        store.close()
    current = {(s.path, s.sha256) for s in ingest_folder(knowledge).sources}
    return active if compiled == current else None


def with_estimate(figures: EvalReport, router: RouterModel | None) -> EvalReport:
    """``figures`` with the wrong-answer rate the router's compile expected beside the measured
    one: at the out-of-scope share it was tuned to, and at the query file's own share."""
    if router is None:
        return figures
    share = figures.out_of_scope / figures.queries if figures.queries else 0.0
    return msgspec.structs.replace(
        figures,
        estimated_wrong_rate=router.estimated_wrong_rate(),
        estimated_wrong_rate_here=router.estimated_wrong_rate(share),
        estimate_basis=router.estimate_basis,
    )


def run_eval(
    queries: Path,
    knowledge: Path,
    *,
    store: str | None = None,
    build_dir: Path | None = None,
    report_path: Path | None = None,
    policy: RouterPolicy | None = None,
    provider: str = "offline",
    model: str | None = None,
) -> EvalResult:
    """Evaluate ``queries`` against the knowledge compiled from ``knowledge`` (with its router
    tuned to ``policy``, default :class:`RouterPolicy`; its questions and answers written by
    ``provider``)."""
    if not queries.is_file():
        raise InvalidInputError(f"query file {queries} does not exist")
    if provider not in PROVIDERS:
        raise InvalidInputError(
            f"unknown provider {provider!r}", hint=f"use one of {', '.join(PROVIDERS)}"
        )
    cases = load_cases(queries)
    policy = policy or RouterPolicy()
    url = store or _default_store(knowledge, policy, provider)
    version = _up_to_date(url, knowledge)
    compiled = version is None
    cost: CompileCost | None = None
    if version is None:
        result = compile_knowledge(
            CompileParams(
                knowledge=str(knowledge),
                store=url,
                publish=True,
                build_dir=str(build_dir or Path(".ragc/eval/build")),
                router=policy,
                provider=provider,  # type: ignore[arg-type]
                model=model,
            )
        )
        version = result.version
        cost = CompileCost(seconds=result.seconds, usage=result.usage)
    opened = open_store(url)
    try:
        ready = VersionCache(opened).get(version)
    finally:
        opened.close()
    outcomes = evaluate(ready.loaded, cases, composer=OfflineProvider(), route=ready.route)
    figures = with_estimate(summarize(outcomes), ready.loaded.router)
    router = ready.loaded.router
    threshold = router.header.threshold if router else None
    agreed = router.header.agreed_threshold if router else None
    if report_path is not None:
        report_path.parent.mkdir(parents=True, exist_ok=True)
        report_path.write_text(
            render_report(
                f"ragc eval: {queries.name} on {knowledge.name} ({version})",
                figures,
                outcomes,
                threshold_curve(outcomes),
                threshold,
                ready.loaded.manifest.duplicates,
            ),
            "utf-8",
        )
    return EvalResult(
        version=version,
        compiled=compiled,
        threshold=threshold,
        agreed_threshold=agreed,
        report=figures,
        outcomes=outcomes,
        duplicate_groups=len(ready.loaded.manifest.duplicates),
        conflict_groups=sum(g.verdict == "conflict" for g in ready.loaded.manifest.duplicates),
        cost=cost,
    )
