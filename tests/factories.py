"""Builders of small, valid artifacts for tests."""

from __future__ import annotations

from schemas.manifest import Manifest, Snapshot, SourceFingerprint
from schemas.records import ExactAnswer, FallbackAnswer, IntentTemplate, Source, TopicBlock

REFUNDS = Source(
    doc_id="refunds", path="policies/refunds.md", section="Return window", anchor="return-window"
)


def make_snapshot(
    version: str,
    *,
    answer: str = "You can return a bike within 30 days.",
    extra_exact: int = 0,
    tenant_answers: dict[str, str] | None = None,
    parent: str | None = None,
) -> Snapshot:
    """A sealed snapshot with one FAQ entry (plus ``extra_exact`` filler entries)."""
    exact = [
        ExactAnswer(
            id="refund.window",
            question="How long do I have to return a bike?",
            aliases=("What is the return window?",),
            answer=answer,
            sources=(REFUNDS,),
            topic="refunds",
            approved_by="test",
            approved_at="2026-11-21T00:00:00Z",
        )
    ]
    exact += [
        ExactAnswer(id=f"filler.{i}", question=f"Filler question number {i}?", answer=f"A{i}")
        for i in range(extra_exact)
    ]
    for tenant, text in (tenant_answers or {}).items():
        exact.append(
            ExactAnswer(
                id="refund.window",
                question="How long do I have to return a bike?",
                answer=text,
                tenant=tenant,
            )
        )
    return Snapshot(
        manifest=Manifest(
            version=version,
            parent=parent,
            created_at="2026-11-21T00:00:00Z",
            sources=(SourceFingerprint(doc_id="refunds", path=REFUNDS.path, sha256="0" * 64),),
        ),
        exact=tuple(exact),
        intents=(
            IntentTemplate(
                intent="refund.window",
                template="You can return a {product} within 30 days.",
                examples=("can i send my bike back",),
                sources=(REFUNDS,),
                topic="refunds",
            ),
        ),
        topics=(
            TopicBlock(
                topic="refunds",
                title="Refunds",
                context="Returns are accepted within 30 days of delivery.",
                tokens=9,
                freshness="2026-11-21",
                sources=(REFUNDS,),
                intents=("refund.window",),
            ),
        ),
        fallbacks=(FallbackAnswer(domain="general", text="I'm not sure; contact support."),),
        blobs={"router.json": b'{"weights": []}'},
    ).sealed()
