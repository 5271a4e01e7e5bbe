"""Stage 7b — duplicates: entries that ask the same question, in one place or several.

FAQ pages that overlap (a CDC, a WHO and an ECDC page all answering "What are the symptoms?")
give the router two classes for one question, between which it splits its probability, and
identical questions are ambiguous phrasings that neither class learns. Entries are grouped when
their canonical questions are equal, or when the cosine of their questions' sentence vectors is
at least :data:`QUESTION_THRESHOLD` (complete linkage: every pair of a group is that close).
Document titles are grouped only when equal: two pages with alike titles are two documents.

The canonical entry (a curated FAQ entry, else the earliest path, then the earliest section)
serves the group. A member whose answer's sentence vector is within :data:`ANSWER_THRESHOLD` of
the canonical answer's (or whose answer is the same text) is merged: its phrasings train the
canonical's router class and its section becomes an alternate source of the canonical answer. A
member that answers otherwise is a conflict: review holds it (see :mod:`tasks.review`), and it is
neither served nor merged until a person approves it (it is then merged) or rejects it.

Thresholds, measured with all-MiniLM-L6-v2 (int8) on covidfaq's 228 entries (no pair of stackfaq,
clinc150 or banking77 entries comes above 0.80): question pairs that ask the same thing score
0.88-1.00, but different questions on overlapping pages score up to 0.94 ("Who is at risk for
COVID-19?" / "Who is at risk for severe disease from COVID-19?" 0.941, "...who has been
quarantined..." / "...who has had COVID-19 spread the illness..." 0.926), so 0.95 keeps only
pairs that are the same question. Answers copied from one section score 0.97-1.00, the same fact
worded by another agency 0.91 ("What is SARS-CoV-2?"), and answers that differ in substance
0.45-0.80 (close contact: "information is online" against "notify public health authorities"
0.68), hence 0.90.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Final

import msgspec
import numpy as np

from providers.embedders import Embedder
from schemas.arrays import Floats
from schemas.build import Chunk, Entry, Question
from schemas.keys import content_hash
from schemas.manifest import DuplicateGroup, DuplicateMember, MemberStatus
from schemas.normalize import canonical_text
from schemas.records import Source
from stores.cache import BuildCache
from tasks._policies import stage_task
from tasks.index import embed_cached
from tasks.synthesize import passage_of

__all__ = [
    "ANSWER_THRESHOLD",
    "QUESTION_THRESHOLD",
    "DuplicateReport",
    "Merged",
    "conflict_fingerprint",
    "detect_duplicates",
    "find_duplicates",
    "merge_duplicates",
]

QUESTION_THRESHOLD: Final = 0.95
"""Minimum cosine of two questions' sentence vectors for them to be the same question."""
ANSWER_THRESHOLD: Final = 0.90
"""Minimum cosine of two answers' sentence vectors for them to be the same answer."""
_BLOCK: Final = 512
_SLACK: Final = 1e-6
"""float32 rounding: a cosine computed as 0.9499999 is at a threshold of 0.95."""

Encode = Callable[[Sequence[str]], Floats]
"""Texts to L2-normalised sentence vectors (one row per text)."""


class DuplicateReport(msgspec.Struct, frozen=True, kw_only=True):
    """What the duplicates stage found."""

    groups: tuple[DuplicateGroup, ...] = ()
    compared: int = 0
    """Entries compared (those with an answer)."""
    question_threshold: float = QUESTION_THRESHOLD
    answer_threshold: float = ANSWER_THRESHOLD

    @property
    def conflicts(self) -> tuple[DuplicateGroup, ...]:
        return tuple(g for g in self.groups if g.verdict == "conflict")


def conflict_fingerprint(entry: Entry, canonical: Entry) -> str:
    """What a review decision on a conflict is bound to: both answers and their evidence."""
    return content_hash(f"duplicate\x1f{entry.fingerprint}\x1f{canonical.fingerprint}", 32)


def _home(entry: Entry, question: Question | None, chunks: dict[str, Chunk]) -> tuple[Source, int]:
    """The section an entry was drawn from, and its position in its document."""
    chunk = chunks.get(question.anchor_chunk or "") if question else None
    if chunk is not None:
        return passage_of(chunk).source, chunk.order
    return entry.sources[0], 0


def _pairs(vectors: Floats, threshold: float) -> list[tuple[float, int, int]]:
    """``(cosine, i, j)`` with ``i < j`` for every pair at or above ``threshold``."""
    found: list[tuple[float, int, int]] = []
    for start in range(0, len(vectors), _BLOCK):
        block = vectors[start : start + _BLOCK] @ vectors.T
        for i, j in np.argwhere(block >= threshold - _SLACK):
            a = start + int(i)
            if a < int(j):
                found.append((float(block[i, j]), a, int(j)))
    return sorted(found, key=lambda p: (-p[0], p[1], p[2]))


def _clusters(
    keys: Sequence[str], vectors: Floats, linkable: Sequence[bool], threshold: float
) -> list[list[int]]:
    """Complete-linkage groups: equal keys always link; vectors link pairs both ``linkable``."""

    def linked(a: int, b: int) -> bool:
        if keys[a] == keys[b]:
            return True
        similar = float(vectors[a] @ vectors[b]) >= threshold - _SLACK
        return linkable[a] and linkable[b] and similar

    owner = list(range(len(keys)))
    members: dict[int, list[int]] = {i: [i] for i in range(len(keys))}

    def join(a: int, b: int) -> None:
        for m in members[b]:
            owner[m] = a
        members[a].extend(members.pop(b))

    first: dict[str, int] = {}
    for i, key in enumerate(keys):
        if key in first:
            join(owner[first[key]], owner[i])
        else:
            first[key] = i
    for _, i, j in _pairs(vectors, threshold):
        a, b = owner[i], owner[j]
        if a == b or not (linkable[i] and linkable[j]):
            continue
        if all(linked(x, y) for x in members[a] for y in members[b]):
            join(min(a, b), max(a, b))
    return [sorted(group) for group in members.values() if len(group) > 1]


def find_duplicates(
    entries: Sequence[Entry],
    questions: Sequence[Question],
    chunks: Sequence[Chunk],
    encode: Encode,
    *,
    question_threshold: float = QUESTION_THRESHOLD,
    answer_threshold: float = ANSWER_THRESHOLD,
) -> DuplicateReport:
    """Groups of answered entries that ask the same question, each with its canonical entry
    first and a verdict on whether the members answer it the same way."""
    candidates = [e for e in entries if e.status != "rejected" and e.answer and e.sources]
    if len(candidates) < 2:
        return DuplicateReport(compared=len(candidates))
    asked = {q.entry_id: q for q in questions}
    by_id = {c.id: c for c in chunks}
    homes = [_home(e, asked.get(e.id), by_id) for e in candidates]
    keys = [canonical_text(e.question) for e in candidates]
    vectors = encode([e.question for e in candidates])
    linkable = [e.origin != "title" for e in candidates]
    groups = []
    for cluster in _clusters(keys, vectors, linkable, question_threshold):
        ordered = sorted(
            cluster,
            key=lambda i: (
                candidates[i].origin != "faq",
                candidates[i].origin == "miss",  # a user's question never leads a group
                homes[i][0].path,
                homes[i][1],
                candidates[i].id,
            ),
        )
        answers = encode([candidates[i].answer for i in ordered])
        lead = ordered[0]
        members = []
        for rank, i in enumerate(ordered):
            entry = candidates[i]
            answer_similarity = round(float(answers[rank] @ answers[0]), 4)
            same = answer_similarity >= answer_threshold - _SLACK or canonical_text(
                entry.answer
            ) == canonical_text(candidates[lead].answer)
            status: MemberStatus = "canonical" if rank == 0 else "merged" if same else "held"
            members.append(
                DuplicateMember(
                    entry_id=entry.id,
                    question=entry.question,
                    section=homes[i][0],
                    question_similarity=min(1.0, round(float(vectors[i] @ vectors[lead]), 4)),
                    answer_similarity=min(1.0, answer_similarity),
                    status=status,
                )
            )
        identity = sorted(f"{m.section.ref}\x1e{canonical_text(m.question)}" for m in members)
        equal = len({keys[i] for i in cluster}) == 1
        groups.append(
            DuplicateGroup(
                id="dup-" + content_hash("\x1f".join(identity), 12),
                verdict="conflict" if any(m.status == "held" for m in members) else "same",
                canonical=members[0].entry_id,
                members=tuple(members),
                reason="the same question"
                if equal
                else f"questions alike (cosine >= {question_threshold:.2f})",
            )
        )
    groups.sort(key=lambda g: (g.members[0].section.path, g.id))
    return DuplicateReport(
        groups=tuple(groups),
        compared=len(candidates),
        question_threshold=question_threshold,
        answer_threshold=answer_threshold,
    )


class Merged(msgspec.Struct, frozen=True, kw_only=True):
    """Approved entries with each group folded into the entry that serves it."""

    entries: tuple[Entry, ...]
    """Approved entries to compile: merged members left out, their phrasings on the canonical."""
    alternates: dict[str, tuple[Source, ...]]
    """Entry id to the sections of the members merged into it."""
    groups: tuple[DuplicateGroup, ...]
    """The groups as compiled: each member's final status."""


def _phrasings(entry: Entry) -> tuple[str, ...]:
    return (entry.question, *entry.paraphrases)


def _extend(entry: Entry, extra: Iterable[str]) -> Entry:
    seen = {canonical_text(p) for p in _phrasings(entry)}
    added = []
    for phrasing in extra:
        key = canonical_text(phrasing)
        if key and key not in seen:
            seen.add(key)
            added.append(phrasing)
    return msgspec.structs.replace(entry, paraphrases=(*entry.paraphrases, *added))


def merge_duplicates(entries: Sequence[Entry], groups: Sequence[DuplicateGroup]) -> Merged:
    """Fold every group into its first approved member (the canonical one unless review held
    or rejected it): approved members are merged, pending ones stay held, rejected ones out."""
    by_id = {e.id: e for e in entries}
    approved = [e for e in entries if e.status == "approved"]
    replaced: dict[str, Entry] = {}
    dropped: set[str] = set()
    alternates: dict[str, tuple[Source, ...]] = {}
    resolved = []
    for group in groups:
        status = {
            m.entry_id: by_id[m.entry_id].status if m.entry_id in by_id else "rejected"
            for m in group.members
        }
        lead = next((m for m in group.members if status[m.entry_id] == "approved"), None)
        members = []
        for member in group.members:
            final: MemberStatus
            if lead is not None and member.entry_id == lead.entry_id:
                final = "canonical"
            elif status[member.entry_id] == "approved" and lead is not None:
                final = "merged"
            elif status[member.entry_id] == "pending":
                final = "held"
            else:
                final = "rejected"
            members.append(msgspec.structs.replace(member, status=final))
        settled = msgspec.structs.replace(
            group,
            canonical=lead.entry_id if lead is not None else group.canonical,
            members=tuple(members),
        )
        resolved.append(settled)
        if lead is None:
            continue
        merged = [m for m in members if m.status == "merged"]
        serving = replaced.get(lead.entry_id, by_id[lead.entry_id])
        replaced[lead.entry_id] = _extend(
            serving, (p for m in merged for p in _phrasings(by_id[m.entry_id]))
        )
        own = {lead.section, *serving.sources}
        alternates[lead.entry_id] = tuple(
            dict.fromkeys(m.section for m in merged if m.section not in own)
        )
        dropped.update(m.entry_id for m in merged)
    return Merged(
        entries=tuple(replaced.get(e.id, e) for e in approved if e.id not in dropped),
        alternates={k: v for k, v in alternates.items() if v},
        groups=tuple(resolved),
    )


@stage_task(retries=0)
def detect_duplicates(
    entries: list[Entry],
    questions: list[Question],
    chunks: list[Chunk],
    embedder: Embedder,
    cache: BuildCache | None,
) -> DuplicateReport:
    """Prefect task over :func:`find_duplicates`, with the compile's sentence vectors (questions
    were embedded for retrieval already, so they come from the build cache)."""
    return find_duplicates(
        entries, questions, chunks, lambda texts: embed_cached(embedder, texts, cache)
    )
