"""Stage 5 — question synthesis: the questions users will ask, per section and topic.

Curated FAQ entries bring their own question and paraphrases. Every document section becomes an
entry whose questions the provider writes from the section (the offline provider derives them
from the heading; a heading that is already a question is kept as the canonical question).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

from providers.base import Passage, Provider
from schemas.build import Chunk, IngestReport, Question, Topic
from schemas.keys import make_name
from schemas.records import Source
from tasks._policies import stage_task

__all__ = ["QUESTIONS_PER_SECTION", "build_questions", "passage_of", "synthesize_questions"]

QUESTIONS_PER_SECTION: Final = 6


def passage_of(chunk: Chunk) -> Passage:
    """A chunk as a provider sees it."""
    return Passage(
        id=chunk.id,
        text=chunk.text,
        title=" > ".join(chunk.heading_path),
        source=Source(
            doc_id=chunk.doc_id, path=chunk.path, section=chunk.section, anchor=chunk.anchor
        ),
    )


def entry_id_for(doc_id: str, anchor: str) -> str:
    """A valid, readable entry id for a document section (``refunds.return-window``)."""
    return make_name(f"{doc_id}.{anchor}")


def sections_of(chunks: Sequence[Chunk]) -> list[list[Chunk]]:
    """Chunks grouped by section (path + anchor), in document order."""
    grouped: dict[tuple[str, str], list[Chunk]] = {}
    for chunk in chunks:
        grouped.setdefault((chunk.path, chunk.anchor), []).append(chunk)
    return list(grouped.values())


def build_questions(
    report: IngestReport,
    chunks: Sequence[Chunk],
    topics: Sequence[Topic],
    provider: Provider,
    *,
    per_section: int = QUESTIONS_PER_SECTION,
) -> list[Question]:
    """One :class:`Question` per FAQ entry and per document section."""
    topic_of = {cid: t.id for t in topics for cid in t.chunk_ids}
    faq_paths = {f.source.path for f in report.faqs}
    questions: list[Question] = []
    chunk_by_anchor = {(c.path, c.anchor): c for c in chunks}
    for faq in report.faqs:
        chunk = chunk_by_anchor.get((faq.source.path, faq.id))
        questions.append(
            Question(
                entry_id=faq.id,
                text=faq.question,
                origin="faq",
                paraphrases=faq.paraphrases,
                topic=topic_of.get(chunk.id) if chunk else None,
                anchor_chunk=chunk.id if chunk else None,
            )
        )
    used = {q.entry_id for q in questions}
    for section in sections_of([c for c in chunks if c.path not in faq_paths]):
        first = section[0]
        base = entry_id_for(first.doc_id, first.anchor)
        entry_id = base
        suffix = 1
        while entry_id in used:
            suffix += 1
            entry_id = f"{base}-{suffix}"
        used.add(entry_id)
        asked = provider.synthesize_questions(
            first.section, [passage_of(c) for c in section], per_section
        )
        if not asked:
            continue
        questions.append(
            Question(
                entry_id=entry_id,
                text=asked[0],
                origin="title" if first.section == first.title else "heading",
                paraphrases=tuple(asked[1:]),
                topic=topic_of.get(first.id),
                anchor_chunk=first.id,
            )
        )
    return questions


@stage_task("synthesize-questions", retries=3)
def synthesize_questions(
    report: IngestReport, chunks: list[Chunk], topics: list[Topic], provider: Provider
) -> list[Question]:
    """Prefect task over :func:`build_questions`."""
    return build_questions(report, chunks, topics, provider)
