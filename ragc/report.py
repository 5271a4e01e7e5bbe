"""The HTML report of ``ragc eval``: a trade-off curve, the worst intents, the misses and the
snapshot's duplicate groups."""

from __future__ import annotations

import html
from collections import Counter
from collections.abc import Sequence

from schemas.evaluation import CurvePoint, EvalReport, Outcome
from schemas.manifest import DuplicateGroup

__all__ = ["render_report"]

_W, _H, _PAD = 560, 320, 48


def _curve_svg(points: Sequence[CurvePoint], chosen: float | None) -> str:
    """Coverage (x) against wrong-answer rate (y), one dot per threshold."""
    if not points:
        return "<p>No router thresholds to show.</p>"
    top = max(0.1, max(p.wrong_rate for p in points) * 1.1)

    def xy(p: CurvePoint) -> tuple[float, float]:
        x = _PAD + p.coverage * (_W - 2 * _PAD)
        y = _H - _PAD - (p.wrong_rate / top) * (_H - 2 * _PAD)
        return x, y

    path = " ".join(
        f"{'M' if i == 0 else 'L'}{x:.1f},{y:.1f}" for i, (x, y) in enumerate(map(xy, points))
    )
    dots = "".join(
        f'<circle cx="{x:.1f}" cy="{y:.1f}" r="{6 if p.threshold == chosen else 3}" '
        f'fill="{"#d9480f" if p.threshold == chosen else "#1c7ed6"}">'
        f"<title>threshold {p.threshold:.2f}: coverage {p.coverage:.1%}, wrong {p.wrong_rate:.1%}"
        f"{'' if p.rejection is None else f', rejection {p.rejection:.1%}'}</title></circle>"
        for p in points
        for x, y in [xy(p)]
    )
    ticks = "".join(
        f'<text x="{_PAD + f * (_W - 2 * _PAD):.0f}" y="{_H - _PAD + 18}" font-size="11" '
        f'text-anchor="middle">{f:.0%}</text>'
        for f in (0, 0.25, 0.5, 0.75, 1.0)
    ) + "".join(
        f'<text x="{_PAD - 6}" y="{_H - _PAD - f * (_H - 2 * _PAD) + 4:.0f}" font-size="11" '
        f'text-anchor="end">{f * top:.0%}</text>'
        for f in (0, 0.5, 1.0)
    )
    return (
        f'<svg width="{_W}" height="{_H}" role="img" aria-label="coverage against wrong answers">'
        f'<rect x="{_PAD}" y="{_PAD}" width="{_W - 2 * _PAD}" height="{_H - 2 * _PAD}" '
        'fill="#f8f9fa" stroke="#ced4da"/>'
        f'<path d="{path}" fill="none" stroke="#1c7ed6" stroke-width="1.5"/>{dots}{ticks}'
        f'<text x="{_W / 2}" y="{_H - 8}" text-anchor="middle" font-size="12">coverage</text>'
        f'<text x="14" y="{_H / 2}" font-size="12" transform="rotate(-90 14 {_H / 2})" '
        'text-anchor="middle">wrong-answer rate</text></svg>'
    )


def _expected(outcome: Outcome) -> str:
    if not outcome.expected:
        return f"fallback ({outcome.oos_type or 'out of scope'})"
    return " or ".join(", ".join(f"{k}={v}" for k, v in t.items()) for t in outcome.expected)


def _rows(outcomes: Sequence[Outcome], limit: int) -> str:
    return "".join(
        f"<tr><td>{html.escape(o.query)}</td><td>{html.escape(_expected(o))}</td>"
        f"<td>{o.layer} {html.escape(o.entry_id or '')}</td><td>{o.confidence:.2f}</td>"
        f"<td>{html.escape(o.explanation)}</td></tr>"
        for o in outcomes[:limit]
    )


def _group_rows(groups: Sequence[DuplicateGroup]) -> str:
    return "".join(
        f"<tr><td>{html.escape(g.id)}</td><td>{g.verdict}</td>"
        f"<td>{html.escape(m.status)}</td><td>{html.escape(m.section.ref)}</td>"
        f"<td>{html.escape(m.question)}</td><td>{m.question_similarity:.2f}</td>"
        f"<td>{m.answer_similarity:.2f}</td></tr>"
        for g in groups
        for m in g.members
    )


def render_report(
    title: str,
    report: EvalReport,
    outcomes: Sequence[Outcome],
    curve: Sequence[CurvePoint],
    threshold: float | None,
    duplicates: Sequence[DuplicateGroup] = (),
) -> str:
    """A self-contained HTML page (no scripts, no external assets)."""
    wrong = [o for o in outcomes if o.served and not o.correct and o.duplicate is None]
    equivalent = [o for o in outcomes if o.duplicate is not None]
    missed = [o for o in outcomes if o.in_scope and not o.served]
    confusions = Counter(
        (_expected(o), o.entry_id or o.layer) for o in wrong if o.in_scope
    ).most_common(15)
    figures = "".join(
        f"<tr><th>{name}</th><td>{value}</td></tr>"
        for name, value in (
            (
                "queries",
                f"{report.queries} ({report.in_scope} in scope, {report.out_of_scope} out)",
            ),
            ("coverage", f"{report.coverage:.1%}"),
            ("wrong-answer rate", f"{report.wrong_rate:.1%}"),
            ("served an equivalent duplicate", f"{report.duplicate_served}"),
            ("coverage, duplicates counted right", f"{report.coverage_lenient:.1%}"),
            ("wrong-answer rate, duplicates counted right", f"{report.wrong_rate_lenient:.1%}"),
            (
                "out-of-scope rejection",
                "—" if report.rejection is None else f"{report.rejection:.1%}",
            ),
            *((f"rejection, {k}", f"{v:.1%}") for k, v in report.rejection_by_type.items()),
            *((f"share {k}", f"{v:.1%}") for k, v in report.layer_share.items()),
            *(
                (
                    f"latency {k}",
                    f"p50 {report.latency_p50_ms[k]} ms, p99 {report.latency_p99_ms[k]} ms",
                )
                for k in report.latency_p50_ms
            ),
        )
    )
    confusion_rows = "".join(
        f"<tr><td>{html.escape(expected)}</td><td>{html.escape(served)}</td><td>{n}</td></tr>"
        for (expected, served), n in confusions
    )
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>body{{font:14px system-ui,sans-serif;margin:2rem;max-width:70rem;color:#212529}}
table{{border-collapse:collapse;margin:1rem 0}}td,th{{border:1px solid #dee2e6;padding:4px 8px;
text-align:left;vertical-align:top}}th{{background:#f1f3f5}}h2{{margin-top:2rem}}</style></head>
<body><h1>{html.escape(title)}</h1>
<table>{figures}</table>
<h2>Coverage against wrong answers, by router threshold</h2>
<p>Each dot is a threshold (hover for figures); the orange one is the threshold compiled into
the snapshot. L1 answers are counted as they are; L3 is left out of the curve.</p>
{_curve_svg(curve, threshold)}
<h2>Worst confusions ({len(wrong)} wrong answers, besides {len(equivalent)} equivalent
duplicates)</h2>
<table><tr><th>expected</th><th>served</th><th>times</th></tr>{confusion_rows}</table>
<h2>Wrong answers</h2>
<table><tr><th>query</th><th>expected</th><th>served</th><th>confidence</th><th>why</th></tr>
{_rows(wrong, 100)}</table>
<h2>Served an equivalent duplicate ({len(equivalent)})</h2>
<p>Counted wrong in the strict figures and right in the lenient ones: the served entry or section
and an accepted target are equivalent members of one duplicate group (below).</p>
<table><tr><th>query</th><th>expected</th><th>served</th><th>confidence</th><th>why</th></tr>
{_rows(equivalent, 100)}</table>
<h2>Misses: in-scope questions that got the fallback ({len(missed)})</h2>
<table><tr><th>query</th><th>expected</th><th>served</th><th>confidence</th><th>why</th></tr>
{_rows(missed, 100)}</table>
<h2>Duplicate groups of the snapshot ({len(duplicates)})</h2>
<table><tr><th>group</th><th>verdict</th><th>member</th><th>section</th><th>question</th>
<th>question cosine</th><th>answer cosine</th></tr>
{_group_rows(duplicates)}</table>
</body></html>
"""
