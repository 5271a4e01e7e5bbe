"""Stage 6 — answer generation: retrieve top-K, rerank, write a grounded answer with citations.

Retrieval searches the temporary index with the question's vector; the reranker blends vector
similarity with lexical overlap and favours the section the question was drawn from. The
provider answers from the top passages only and cites them; citations become the entry's
sources. Curated FAQ answers are taken as written.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

from providers._text import content_words
from providers.base import Passage, Provider
from schemas.build import Chunk, Entry, IngestReport, Question
from schemas.keys import content_hash
from stores.cache import BuildCache
from tasks._policies import stage_task
from tasks.index import ChunkIndex, embed_cached
from tasks.synthesize import passage_of

__all__ = ["RETRIEVE_K", "answer_questions", "generate_answers", "rerank"]

RETRIEVE_K: Final = 8
PASSAGES: Final = 3
_SAME_SECTION_BONUS: Final = 0.3


def fingerprint(answer: str, evidence: Sequence[Chunk]) -> str:
    """What a review decision is bound to: the answer and the text it was drawn from."""
    return content_hash(answer + "\x1f" + "\x1f".join(c.text for c in evidence), 32)


def rerank(question: str, hits: Sequence[tuple[Chunk, float]], anchor: Chunk | None) -> list[Chunk]:
    """Order retrieved chunks by vector score, lexical overlap and section affinity."""
    wanted = set(content_words(question))

    def score(item: tuple[Chunk, float]) -> float:
        chunk, similarity = item
        words = set(content_words(f"{chunk.section} {chunk.text}"))
        lexical = len(wanted & words) / len(wanted) if wanted else 0.0
        same = anchor is not None and (chunk.path, chunk.anchor) == (anchor.path, anchor.anchor)
        return 0.5 * similarity + 0.5 * lexical + (_SAME_SECTION_BONUS if same else 0.0)

    return [c for c, _ in sorted(hits, key=lambda h: (-score(h), h[0].id))]


def answer_questions(
    report: IngestReport,
    questions: Sequence[Question],
    index: ChunkIndex,
    provider: Provider,
    cache: BuildCache | None,
) -> list[Entry]:
    """An entry per question: curated answers as written, others generated from passages."""
    faqs = {f.id: f for f in report.faqs}
    generated = [q for q in questions if q.origin != "faq"]
    vectors = embed_cached(index.embedder, [q.text for q in generated], cache)
    vector_of = {q.entry_id: vectors[i] for i, q in enumerate(generated)}
    entries: list[Entry] = []
    for question in questions:
        if question.origin == "faq":
            faq = faqs[question.entry_id]
            anchor = index.chunks.get(question.anchor_chunk or "")
            entries.append(
                Entry(
                    id=faq.id,
                    question=faq.question,
                    answer=faq.answer,
                    sources=(faq.source,),
                    paraphrases=faq.paraphrases,
                    topic=question.topic,
                    origin="faq",
                    template=faq.template,
                    slots=faq.slots,
                    score=1.0,
                    evidence=(anchor.id,) if anchor else (),
                    fingerprint=fingerprint(faq.answer, [anchor] if anchor else []),
                )
            )
            continue
        anchor = index.chunks.get(question.anchor_chunk or "")
        hits = [
            (index.chunks[h.chunk_id], h.score)
            for h in index.search(vector_of[question.entry_id], RETRIEVE_K)
        ]
        if anchor is not None and all(c.id != anchor.id for c, _ in hits):
            hits.append((anchor, 0.0))
        ranked = rerank(f"{question.text} {anchor.section if anchor else ''}", hits, anchor)
        passages: list[Passage] = [passage_of(c) for c in ranked[:PASSAGES]]
        draft = provider.answer(question.text, passages)
        cited = [index.chunks[c] for c in draft.citations if c in index.chunks]
        entries.append(
            Entry(
                id=question.entry_id,
                question=question.text,
                answer=draft.text,
                sources=tuple(dict.fromkeys(passage_of(c).source for c in cited)),
                paraphrases=question.paraphrases,
                topic=question.topic,
                origin=question.origin,
                status="rejected" if draft.abstained or not cited else "pending",
                note="the provider found no answer in the passages" if draft.abstained else "",
                evidence=tuple(c.id for c in cited),
                fingerprint=fingerprint(draft.text, cited),
            )
        )
    return entries


@stage_task(retries=3)
def generate_answers(
    report: IngestReport,
    questions: list[Question],
    index: ChunkIndex,
    provider: Provider,
    cache: BuildCache | None,
) -> list[Entry]:
    """Prefect task over :func:`answer_questions`."""
    return answer_questions(report, questions, index, provider, cache)
