"""Eval metrics over labelled queries (the definitions of ``../shared/eval/README.md``).

A served answer is correct when it matches any ``accept`` target; a target matches when each of
its fields does: ``entry_id`` the served entry, ``doc_id`` the file stem of a cited source,
``section`` that source's heading (compared without case or punctuation). ``accept: []`` marks an
out-of-scope query: only the fallback is correct, and any served answer to it is wrong.

A wrong answer that serves an equivalent duplicate of an accepted target — its entry or cited
section and the target's are members of one duplicate group of the snapshot's manifest, each
``canonical`` or ``merged`` (not a ``held`` or ``rejected`` conflict) — is counted apart as
``duplicate_served``: wrong in the strict figures, right in the lenient ones.
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence

import msgspec

from schemas.build import RegressionCase
from schemas.ladder import Answer, Composer, LoadedSnapshot, Route, answer_question
from schemas.manifest import DuplicateGroup
from schemas.normalize import canonical_text
from schemas.router import OUT_OF_SCOPE

__all__ = [
    "CurvePoint",
    "EvalReport",
    "Outcome",
    "equivalent_duplicate",
    "evaluate",
    "is_correct",
    "outcome_of",
    "summarize",
    "threshold_curve",
]

_PUNCT = re.compile(r"[^\w\s]")


def _same_section(a: str, b: str) -> bool:
    return canonical_text(_PUNCT.sub(" ", a)) == canonical_text(_PUNCT.sub(" ", b))


def _matches(answer: Answer, target: Mapping[str, str]) -> bool:
    if "entry_id" in target and answer.entry_id != target["entry_id"]:
        return False
    if "doc_id" in target or "section" in target:
        return any(
            ("doc_id" not in target or s.doc_id == target["doc_id"])
            and ("section" not in target or _same_section(s.section, target["section"]))
            for s in answer.sources
        )
    return True


def _would_be_correct(loaded: LoadedSnapshot, intent: str, case: RegressionCase) -> bool:
    template = next((t for t in loaded.intents.values() if t.intent == intent), None)
    if template is None or not case.accept:
        return False
    probe = Answer(
        answer="",
        layer="L2",
        entry_id=intent,
        sources=template.sources,
        version="",
        cache_key=None,
        confidence=0.0,
        latency_ms=0.0,
    )
    return is_correct(probe, case)


def is_correct(answer: Answer, case: RegressionCase) -> bool:
    """Whether the ladder's answer is right for this labelled query."""
    if not case.accept:
        return answer.layer == "SAFE"
    return answer.layer != "SAFE" and any(_matches(answer, t) for t in case.accept)


_EQUIVALENT = ("canonical", "merged")


def equivalent_duplicate(
    answer: Answer, case: RegressionCase, groups: Sequence[DuplicateGroup]
) -> DuplicateGroup | None:
    """The duplicate group through which a wrong in-scope answer serves an accepted target's
    equivalent (the served entry or a cited section is an equivalent member of the group, and
    so is a member matching an accept target), else ``None``."""
    if not case.accept or answer.layer == "SAFE" or is_correct(answer, case):
        return None
    cited = {(s.path, s.anchor) for s in answer.sources}
    for group in groups:
        equivalent = [m for m in group.members if m.status in _EQUIVALENT]
        if not any(
            (answer.entry_id is not None and m.entry_id == answer.entry_id)
            or (m.section.path, m.section.anchor) in cited
            for m in equivalent
        ):
            continue
        for member in equivalent:
            probe = msgspec.structs.replace(
                answer, entry_id=member.entry_id, sources=(member.section,)
            )
            if any(_matches(probe, t) for t in case.accept):
                return group
    return None


class Outcome(msgspec.Struct, frozen=True, kw_only=True):
    """One query's result."""

    query: str
    layer: str
    served: bool
    correct: bool
    in_scope: bool
    oos_type: str | None
    entry_id: str | None
    expected: tuple[dict[str, str], ...]
    confidence: float
    latency_ms: float
    explanation: str = ""
    candidate: str | None = None
    """The router's best in-scope guess (what L2 would serve at a lower threshold)."""
    candidate_confidence: float = 0.0
    candidate_correct: bool = False
    """Whether serving ``candidate`` would have been right."""
    duplicate: str | None = None
    """Wrong strictly, but an equivalent duplicate of a target: the duplicate group's id."""


def outcome_of(
    case: RegressionCase,
    answer: Answer,
    loaded: LoadedSnapshot | None = None,
    *,
    duplicates: Sequence[DuplicateGroup] | None = None,
) -> Outcome:
    """One query's outcome; with ``loaded``, also what the router's best guess would give.
    Duplicate groups come from ``duplicates``, else from ``loaded``'s manifest."""
    candidate, confidence, right = None, 0.0, False
    if answer.candidates:
        candidate, confidence = answer.candidates[0]
        if candidate == OUT_OF_SCOPE:
            candidate = None
        elif loaded is not None:
            right = _would_be_correct(loaded, candidate, case)
    if duplicates is None:
        duplicates = loaded.manifest.duplicates if loaded is not None else ()
    group = equivalent_duplicate(answer, case, duplicates)
    return Outcome(
        duplicate=group.id if group else None,
        candidate=candidate,
        candidate_confidence=confidence,
        candidate_correct=right,
        query=case.query,
        layer=answer.layer,
        served=answer.layer != "SAFE",
        correct=is_correct(answer, case),
        in_scope=bool(case.accept),
        oos_type=case.oos_type,
        entry_id=answer.entry_id,
        expected=case.accept,
        confidence=answer.confidence,
        latency_ms=answer.latency_ms,
        explanation=answer.explanation,
    )


class EvalReport(msgspec.Struct, frozen=True, kw_only=True):
    """The figures of one query file."""

    queries: int
    in_scope: int
    out_of_scope: int
    coverage: float
    """Correct answers / in-scope queries."""
    wrong_rate: float
    """Served answers that are wrong / all served answers."""
    rejection: float | None
    """Fallbacks / out-of-scope queries (``None`` without out-of-scope queries)."""
    rejection_by_type: dict[str, float]
    pass_rate: float
    """Queries with the right outcome (right answer, or the fallback when out of scope)."""
    duplicate_served: int = 0
    """Wrong answers that served an equivalent duplicate of a target (see the module)."""
    coverage_lenient: float = 0.0
    """Coverage with equivalent duplicates counted right."""
    wrong_rate_lenient: float = 0.0
    """Wrong-answer rate with equivalent duplicates counted right."""
    layer_share: dict[str, float]
    latency_p50_ms: dict[str, float]
    latency_p99_ms: dict[str, float]
    estimated_wrong_rate: float | None = None
    """The wrong-answer rate the compile expected at the out-of-scope share it was tuned to
    (``None``: it could not estimate)."""
    estimated_wrong_rate_here: float | None = None
    """The same estimate at this query file's own out-of-scope share."""
    estimate_basis: str = ""
    """What the estimate stands on."""


def _percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return 0.0
    return round(ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))], 3)


def evaluate(
    loaded: LoadedSnapshot,
    cases: Iterable[RegressionCase],
    *,
    composer: Composer | None = None,
    route: Route | None = None,
) -> list[Outcome]:
    """Every case through the answer ladder: the eval harness and the regression gate."""
    return [
        outcome_of(
            case, answer_question(loaded, case.query, composer=composer, route=route), loaded
        )
        for case in cases
    ]


class CurvePoint(msgspec.Struct, frozen=True, kw_only=True):
    """Coverage and wrong-answer rate if L2 answered at ``threshold`` (L1 as it is, no L3)."""

    threshold: float
    coverage: float
    wrong_rate: float
    rejection: float | None


def threshold_curve(
    outcomes: Sequence[Outcome], thresholds: Sequence[float] | None = None
) -> list[CurvePoint]:
    """The coverage / wrong-answer trade-off across router thresholds."""
    points = []
    in_scope = [o for o in outcomes if o.in_scope]
    oos = [o for o in outcomes if not o.in_scope]
    for t in thresholds or [round(0.05 * i, 2) for i in range(1, 20)]:
        served = correct = wrong = rejected = 0
        for o in outcomes:
            if o.layer == "L1":
                is_served, is_right = True, o.correct
            else:
                is_served = o.candidate is not None and o.candidate_confidence >= t
                is_right = o.candidate_correct if is_served else not o.in_scope
            served += is_served
            wrong += is_served and not is_right
            correct += is_served and is_right and o.in_scope
            rejected += (not is_served) and not o.in_scope
        points.append(
            CurvePoint(
                threshold=t,
                coverage=round(correct / len(in_scope), 4) if in_scope else 0.0,
                wrong_rate=round(wrong / served, 4) if served else 0.0,
                rejection=round(rejected / len(oos), 4) if oos else None,
            )
        )
    return points


def summarize(outcomes: Iterable[Outcome]) -> EvalReport:
    """The report's figures from per-query outcomes."""
    rows = list(outcomes)
    in_scope = [o for o in rows if o.in_scope]
    oos = [o for o in rows if not o.in_scope]
    served = [o for o in rows if o.served]
    by_type: defaultdict[str, list[Outcome]] = defaultdict(list)
    for o in oos:
        by_type[o.oos_type or "unspecified"].append(o)
    layers = Counter(o.layer for o in rows)
    duplicates = sum(o.duplicate is not None for o in rows)
    lenient = sum(o.correct or o.duplicate is not None for o in in_scope)
    latencies: defaultdict[str, list[float]] = defaultdict(list)
    for o in rows:
        latencies[o.layer].append(o.latency_ms)
    return EvalReport(
        queries=len(rows),
        in_scope=len(in_scope),
        out_of_scope=len(oos),
        coverage=round(sum(o.correct for o in in_scope) / len(in_scope), 4) if in_scope else 0.0,
        wrong_rate=round(sum(not o.correct for o in served) / len(served), 4) if served else 0.0,
        rejection=round(sum(not o.served for o in oos) / len(oos), 4) if oos else None,
        rejection_by_type={
            t: round(sum(not o.served for o in group) / len(group), 4)
            for t, group in sorted(by_type.items())
        },
        pass_rate=round(sum(o.correct for o in rows) / len(rows), 4) if rows else 1.0,
        duplicate_served=duplicates,
        coverage_lenient=round(lenient / len(in_scope), 4) if in_scope else 0.0,
        wrong_rate_lenient=round(
            sum(not o.correct and o.duplicate is None for o in served) / len(served), 4
        )
        if served
        else 0.0,
        layer_share={layer: round(n / len(rows), 4) for layer, n in sorted(layers.items())},
        latency_p50_ms={k: _percentile(v, 0.5) for k, v in sorted(latencies.items())},
        latency_p99_ms={k: _percentile(v, 0.99) for k, v in sorted(latencies.items())},
    )
