"""Stage 5 — question synthesis: the questions users will ask, per section and topic.

Curated FAQ entries bring their own question and paraphrases. Every document section becomes an
entry whose questions the provider writes from the section (the offline provider derives them
from the heading; a heading that is already a question is kept as the canonical question).

Questions a language model wrote are checked before they become phrasings: each must find its
own section as the nearest of all the index's chunks (:func:`answerable_by`), else it is about
something else or another section answers it better, and it is dropped. A section whose every
question is dropped keeps its heading as the one question.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Final

import numpy as np

from providers._chat import UnusableReplyError
from providers.base import Passage, Provider
from schemas.build import Chunk, IngestReport, Question, Topic
from schemas.keys import make_name, unique_name
from schemas.records import Source
from stores.cache import BuildCache
from tasks._policies import stage_task
from tasks.index import ChunkIndex, embed_cached

logger = logging.getLogger("tasks.synthesize")

__all__ = [
    "QUESTIONS_PER_SECTION",
    "answerable_by",
    "build_questions",
    "passage_of",
    "synthesize_questions",
    "writes_questions",
]

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


def writes_questions(provider: Provider) -> bool:
    """Whether ``provider`` writes its own questions (a language model) rather than templates
    of the heading (the offline provider)."""
    return provider.name != "offline"


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
    index: ChunkIndex | None = None,
    cache: BuildCache | None = None,
) -> list[Question]:
    """One :class:`Question` per FAQ entry and per document section; with ``index``, a model's
    questions are kept only where :func:`answerable_by` says so."""
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
        entry_id = unique_name(entry_id_for(first.doc_id, first.anchor), used)
        heading = first.section.strip()
        try:
            asked = provider.synthesize_questions(
                first.section, [passage_of(c) for c in section], per_section
            )
        except UnusableReplyError as exc:
            logger.warning("%s: %s; the section keeps its heading as its question", entry_id, exc)
            asked = (heading,)
        if index is not None and writes_questions(provider) and asked:
            kept = answerable_by(index, asked, {c.id for c in section}, cache)
            if len(kept) < len(asked):
                logger.info(
                    "%s: dropped %d of %d questions that another section answers better",
                    entry_id,
                    len(asked) - len(kept),
                    len(asked),
                )
            if heading.endswith("?") and heading.casefold() not in {k.casefold() for k in kept}:
                kept = (heading, *kept)
            asked = kept or (heading,)
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


def answerable_by(
    index: ChunkIndex,
    questions: Sequence[str],
    section: set[str],
    cache: BuildCache | None = None,
) -> tuple[str, ...]:
    """The ``questions`` whose nearest chunk of the whole index is one of ``section``'s."""
    ids = list(index.vectors)
    if not ids or not questions:
        return ()
    matrix = np.stack([index.vectors[i] for i in ids])
    vectors = embed_cached(index.embedder, list(questions), cache)
    nearest = np.argmax(vectors @ matrix.T, axis=1)
    return tuple(q for q, best in zip(questions, nearest, strict=True) if ids[best] in section)


@stage_task(retries=3)
def synthesize_questions(
    report: IngestReport,
    chunks: list[Chunk],
    topics: list[Topic],
    provider: Provider,
    index: ChunkIndex | None = None,
    cache: BuildCache | None = None,
) -> list[Question]:
    """Prefect task over :func:`build_questions`."""
    return build_questions(report, chunks, topics, provider, index=index, cache=cache)
