"""Stage 2 — parse & chunk: heading-bounded chunks that keep their heading path and anchor.

Sections come from unstructured (see ``tasks._parse``); a section longer than the chunk size is
split at sentence boundaries by llama-index's ``SentenceSplitter``, each piece keeping the
section's ``doc_id``, ``path``, ``section`` and ``anchor``. Curated FAQ entries become one chunk
each, so their answers are knowledge for topics and L3 blocks too.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from pathlib import Path
from typing import Final

import msgspec

from schemas.build import Chunk, IngestReport, SourceDoc
from schemas.keys import content_hash, unique_name
from stores.cache import BuildCache
from tasks._parse import ParsedSection, parse_document
from tasks._policies import stage_task

__all__ = ["CHUNK_TOKENS", "chunk_documents", "chunk_source", "slugify"]

CHUNK_TOKENS: Final = 320
CHUNK_OVERLAP: Final = 40
_NOT_SLUG: Final = re.compile(r"[^\w\- ]+")


def slugify(heading: str) -> str:
    """A URL fragment for a heading, the way GitHub renders one (``Return window`` ->
    ``return-window``)."""
    text = unicodedata.normalize("NFKC", heading).strip().lower()
    return _NOT_SLUG.sub("", text).replace(" ", "-") or "section"


def _unique(slug: str, used: set[str]) -> str:
    """``slug``, or the first ``slug-N`` not yet used (GitHub's rule for repeated headings)."""
    return unique_name(slug, used, first=1)


def _anchors(sections: Sequence[ParsedSection], fallback: str) -> list[tuple[str, str]]:
    """``(section title, unique anchor)`` for each section, in order.

    Headed sections get their anchors first, in document order, so a heading keeps the anchor
    a renderer gives it; text before the first heading is filed under ``fallback`` with an
    anchor that avoids theirs.
    """
    used: set[str] = set()
    anchors: dict[int, tuple[str, str]] = {}
    for i, section in enumerate(sections):
        if section.heading_path:
            title = section.heading_path[-1]
            anchors[i] = (title, _unique(slugify(title), used))
    for i, section in enumerate(sections):
        if not section.heading_path:
            anchors[i] = (fallback, _unique(slugify(fallback), used))
    return [anchors[i] for i in range(len(sections))]


def chunk_source(root: Path, source: SourceDoc, *, chunk_tokens: int = CHUNK_TOKENS) -> list[Chunk]:
    """Parse one document and cut it into chunks."""
    sections = parse_document(root / source.path, source.kind)
    from llama_index.core.node_parser import SentenceSplitter  # noqa: PLC0415 - heavy import

    splitter = SentenceSplitter(chunk_size=chunk_tokens, chunk_overlap=CHUNK_OVERLAP)
    title = next((s.heading_path[0] for s in sections if s.heading_path), source.doc_id)
    chunks: list[Chunk] = []
    for section, (name, anchor) in zip(sections, _anchors(sections, title), strict=True):
        for piece in splitter.split_text(section.text):
            chunks.append(
                Chunk(
                    id=content_hash(f"{source.path}#{anchor}\n{piece}"),
                    doc_id=source.doc_id,
                    path=source.path,
                    section=name,
                    anchor=anchor,
                    heading_path=section.heading_path or (name,),
                    text=piece,
                    order=len(chunks),
                    title=title,
                )
            )
    return chunks


def faq_chunks(report: IngestReport) -> list[Chunk]:
    """One chunk per curated FAQ entry (question as heading, answer as text)."""
    return [
        Chunk(
            id=content_hash(f"{faq.source.path}#{faq.id}\n{faq.answer}"),
            doc_id=faq.source.doc_id,
            path=faq.source.path,
            section=faq.question,
            anchor=faq.id,
            heading_path=(faq.question,),
            text=faq.answer,
            order=order,
            title=faq.question,
        )
        for order, faq in enumerate(report.faqs)
    ]


CHUNK_VERSION: Final = "1"
"""Bump when parsing or chunking changes, so cached chunks are rebuilt."""


def chunks_cached(root: Path, source: SourceDoc, cache: BuildCache | None) -> list[Chunk]:
    """A document's chunks, reused from the build cache while its bytes are unchanged."""
    key = f"{CHUNK_VERSION}:{CHUNK_TOKENS}:{source.sha256}:{source.path}"
    found = cache.get("chunks", key) if cache else None
    if found is not None:
        return msgspec.json.decode(found, type=list[Chunk])
    chunks = chunk_source(root, source)
    if cache:
        cache.put("chunks", key, msgspec.json.encode(chunks))
    return chunks


@stage_task(retries=2)
def chunk_documents(root: str, report: IngestReport, cache: BuildCache | None) -> list[Chunk]:
    """Every document's chunks plus the curated FAQ chunks, in source order."""
    chunks: list[Chunk] = []
    for source in report.sources:
        if source.kind not in ("faq", "out_of_scope"):
            chunks.extend(chunks_cached(Path(root), source, cache))
    chunks.extend(faq_chunks(report))
    return chunks
