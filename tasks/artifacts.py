"""Stage 9 — compile artifacts: L1 exact records, L2 intent templates, L3 topic blocks, router.

Only approved entries are compiled. A phrasing whose canonical form belongs to more than one
entry is ambiguous and becomes no exact key. Topic blocks gather their chunks under headings
that carry the ``path#anchor`` they came from, bounded by a token budget and token-counted.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from functools import cache
from importlib import metadata
from typing import Any, Final

import msgspec

from schemas.build import Chunk, Entry, IngestReport, SourceDoc, Topic
from schemas.keys import content_hash
from schemas.ladder import DEFAULT_FALLBACK
from schemas.manifest import DuplicateGroup, Manifest, Snapshot, SourceFingerprint
from schemas.normalize import canonical_text
from schemas.records import (
    ExactAnswer,
    FallbackAnswer,
    IntentTemplate,
    Source,
    TopicBlock,
    TopicPassage,
    render_passages,
)
from schemas.router import ROUTER_BLOB, RouterModel
from stores.cache import BuildCache
from tasks.duplicates import merge_duplicates
from tasks.router import Encoder, RouterPolicy, Tuning, example_digests, train_router
from tasks.synthesize import passage_of

__all__ = [
    "TOPIC_TOKENS",
    "SnapshotInputs",
    "build_snapshot",
    "count_tokens",
    "router_examples",
    "topic_blocks",
]

TOPIC_TOKENS: Final = 1500


@cache
def _tokenizer() -> object:
    from llama_index.core.utils import get_tokenizer  # noqa: PLC0415 - heavy import

    return get_tokenizer()


def count_tokens(text: str) -> int:
    """Tokens of ``text`` with the cl100k tokenizer llama-index ships (no download)."""
    encode = _tokenizer()
    return len(encode(text))  # type: ignore[operator]


def _ambiguous(entries: Sequence[Entry]) -> set[str]:
    owners: dict[str, set[str]] = {}
    for entry in entries:
        for phrasing in (entry.question, *entry.paraphrases):
            owners.setdefault(canonical_text(phrasing), set()).add(entry.id)
    return {text for text, ids in owners.items() if len(ids) > 1}


def router_examples(entries: Sequence[Entry]) -> list[tuple[str, str]]:
    """``(phrasing, entry id)`` for every approved entry, ambiguous phrasings left out."""
    ambiguous = _ambiguous(entries)
    return [
        (phrasing, entry.id)
        for entry in entries
        for phrasing in (entry.question, *entry.paraphrases)
        if canonical_text(phrasing) not in ambiguous and canonical_text(phrasing)
    ]


def topic_blocks(
    topics: Sequence[Topic],
    chunks: Sequence[Chunk],
    entries: Sequence[Entry],
    sources: Sequence[SourceDoc],
    *,
    budget: int = TOPIC_TOKENS,
) -> list[TopicBlock]:
    """One knowledge brief per topic, within ``budget`` tokens, from its document passages.

    FAQ answers stay out: L1 and L2 serve them whenever the router is sure, and composing them
    for a question it was not sure about would serve a guess. A topic with no document passage
    gets no block, so its uncertain questions get the safe fallback.
    """
    by_id = {c.id: c for c in chunks}
    modified = {s.path: s.modified for s in sources}
    faq_files = {s.path for s in sources if s.kind == "faq"}
    blocks = []
    for topic in topics:
        parts: list[TopicPassage] = []
        cited: list[Source] = []
        used = 0
        for chunk_id in topic.chunk_ids:
            chunk = by_id[chunk_id]
            if chunk.path in faq_files:
                continue
            source = passage_of(chunk).source
            part = TopicPassage(
                heading=" > ".join(chunk.heading_path), ref=source.ref, text=chunk.text
            )
            tokens = count_tokens(part.render())
            if parts and used + tokens > budget:
                break
            parts.append(part)
            used += tokens
            if source not in cited:
                cited.append(source)
        if not parts:
            continue
        context = render_passages(parts)
        blocks.append(
            TopicBlock(
                topic=topic.id,
                title=topic.name,
                context=context,
                tokens=count_tokens(context),
                freshness=max((modified.get(s.path, "") for s in cited), default=""),
                sources=tuple(cited),
                intents=tuple(e.id for e in entries if e.topic == topic.id),
                passages=tuple(parts),
            )
        )
    return blocks


ROUTER_VERSION: Final = "11"
"""Bump when router features or training change, so cached routers are retrained."""
ARTIFACTS_VERSION: Final = "4"
"""Bump when the artifacts built from the same inputs change (e.g. what a topic block holds)."""


def router_blob(
    examples: Sequence[tuple[str, str]],
    out_of_scope: Sequence[str],
    *,
    encoder: Encoder | None,
    encoder_id: str | None,
    cache: BuildCache | None,
    policy: RouterPolicy | None = None,
    documents: Mapping[str, str] | None = None,
    model_phrasings: bool = False,
) -> bytes:
    """The trained router as bytes, reused from the build cache when it was trained on exactly
    these examples, out-of-scope questions, document texts and encoder before (and the same
    kind of document phrasings: see :func:`tasks.router.train_router`)."""
    key = content_hash(
        msgspec.json.encode(
            [
                ROUTER_VERSION,
                encoder_id,
                sorted(examples),
                sorted(out_of_scope),
                sorted((documents or {}).items()),
                model_phrasings,
                *(
                    (policy.wrong_target, policy.oos_share, policy.similarity_gate)
                    if policy
                    else ()
                ),
            ]
        ),
        40,
    )
    found = cache.get("router", key) if cache else None
    if found is not None:
        return found
    # Tunings are reused across compiles of the same router version only: a newer one may
    # tune more (e.g. the similarity gate), which an older tuning knows nothing of.
    tuned_for = f"{ROUTER_VERSION}:{encoder_id}:{'model' if model_phrasings else 'templates'}"
    last = cache.get("router-tuning", tuned_for) if cache else None
    previous = msgspec.json.decode(last, type=Tuning) if last else None
    latest = cache.get("router-latest", str(encoder_id)) if cache else None
    router = train_router(
        examples,
        out_of_scope,
        encoder=encoder,
        encoder_id=encoder_id,
        previous=previous,
        start=RouterModel.from_bytes(latest) if latest else None,
        policy=policy,
        documents=documents,
        model_phrasings=model_phrasings,
    )
    blob = router.to_bytes()
    if cache:
        settled = policy or RouterPolicy()
        cache.put("router", key, blob)
        cache.put("router-latest", str(encoder_id), blob)
        tuning = Tuning(
            digests=example_digests(examples, out_of_scope),
            threshold=router.header.threshold,
            agreed=router.header.agreed_threshold,
            words_weight=router.header.words_weight,
            similarity=router.header.min_similarity,
            wrong_target=settled.wrong_target,
            oos_share=settled.oos_share,
            similarity_gate=settled.similarity_gate,
            anchor_threshold=router.header.anchor_threshold,
            anchor_margin=router.header.anchor_margin,
            metrics={
                k: v for k, v in router.header.metrics.items() if k != "threshold_reused_overlap"
            },
        )
        if previous is None or "threshold_reused_overlap" not in router.header.metrics:
            cache.put("router-tuning", tuned_for, msgspec.json.encode(tuning))
    return blob


def compiler_id() -> str:
    """The compiler's identity: the package version and every stage version that shapes output."""
    from tasks._llm_cache import STAGE_VERSION  # noqa: PLC0415
    from tasks.chunk import CHUNK_VERSION  # noqa: PLC0415

    try:
        package = metadata.version("ragc")
    except metadata.PackageNotFoundError:
        package = "dev"
    return (
        f"ragc-{package}/chunk-{CHUNK_VERSION}/llm-{STAGE_VERSION}/router-{ROUTER_VERSION}"
        f"/artifacts-{ARTIFACTS_VERSION}"
    )


def _template(answer: str) -> str:
    """An approved answer as a template with no slots (braces escaped)."""
    return answer.replace("{", "{{").replace("}", "}}")


class SnapshotInputs(msgspec.Struct, frozen=True, kw_only=True):
    """What the compile's stages made that a snapshot is built from."""

    version: str
    parent: str | None
    report: IngestReport
    chunks: Sequence[Chunk]
    topics: Sequence[Topic]
    entries: Sequence[Entry]
    duplicates: Sequence[DuplicateGroup] = ()
    """Each group is compiled as one entry (see :func:`tasks.duplicates.merge_duplicates`)."""
    model_phrasings: bool = False
    """A language model wrote the document sections' questions."""


def _provenance(entry: Entry, alternates: Mapping[str, tuple[Source, ...]]) -> dict[str, Any]:
    """The fields an L1 answer and an L2 template take alike from their entry."""
    return {
        "sources": entry.sources,
        "alternates": alternates.get(entry.id, ()),
        "topic": entry.topic,
        "confidence": entry.score,
        "approved_via": entry.approved_via,
        "approved_by": entry.approved_by,
        "approved_at": entry.approved_at,
    }


def build_snapshot(
    inputs: SnapshotInputs,
    *,
    encoder: Encoder | None = None,
    encoder_id: str | None = None,
    cache: BuildCache | None = None,
    fallback: str = DEFAULT_FALLBACK,
    policy: RouterPolicy | None = None,
) -> Snapshot:
    """The sealed snapshot of approved entries, with a router trained on them."""
    report, chunks, topics = inputs.report, inputs.chunks, inputs.topics
    merged = merge_duplicates(inputs.entries, inputs.duplicates)
    approved = list(merged.entries)
    alternates = merged.alternates
    ambiguous = _ambiguous(approved)
    exact = tuple(
        ExactAnswer(
            id=e.id,
            question=e.question,
            answer=e.answer,
            aliases=tuple(p for p in e.paraphrases if canonical_text(p) not in ambiguous),
            **_provenance(e, alternates),
        )
        for e in approved
        if canonical_text(e.question) not in ambiguous
    )
    intents = tuple(
        IntentTemplate(
            intent=e.id,
            template=e.template or _template(e.answer),
            slots=e.slots,
            static_context=e.answer if e.slots else "",
            examples=(e.question, *e.paraphrases),
            **_provenance(e, alternates),
        )
        for e in approved
    )
    blobs: dict[str, bytes] = {}
    examples = router_examples(approved)
    if examples:
        blobs[ROUTER_BLOB] = router_blob(
            examples,
            [o.question for o in report.out_of_scope],
            encoder=encoder,
            encoder_id=encoder_id,
            cache=cache,
            policy=policy,
            documents={e.id: e.answer for e in approved if e.origin != "faq"},
            model_phrasings=inputs.model_phrasings,
        )
    manifest = Manifest(
        compiler=compiler_id(),
        version=inputs.version,
        parent=inputs.parent,
        created_at=datetime.now(UTC).isoformat(timespec="seconds"),
        sources=tuple(
            SourceFingerprint(doc_id=s.doc_id, path=s.path, sha256=s.sha256, bytes=s.bytes)
            for s in report.sources
        ),
        duplicates=merged.groups,
    )
    return Snapshot(
        manifest=manifest,
        exact=exact,
        intents=intents,
        topics=tuple(topic_blocks(topics, chunks, approved, report.sources)),
        fallbacks=(FallbackAnswer(domain="general", text=fallback),),
        blobs=blobs,
    ).sealed()
