"""Stage 5b — auto-FAQ drafts: the questions users asked that the service could not answer.

Every question the service answered with the fallback is in the miss log. Those asked at least
:attr:`AutoFaqPolicy.min_asked` times (by any tenant) that no compiled question already asks
become questions of their own (origin ``miss``): the compile answers them from the index and
verifies them like synthesized ones, with the same provider and call cache. A draft is never
served on its own authority: review holds every one for a person, whatever the policy
(:func:`tasks.review.apply_review`), so an approved draft is served from the next compile, a
rejected one stays out, and a draft whose answer the provider could not find is dropped. This
closes the loop the miss-coverage gate measures.

The question is a user's own words, so a reviewer reads it as well as the answer: once
approved it is a phrasing every tenant of this knowledge is matched against.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

from schemas.build import Question
from schemas.keys import content_hash
from schemas.normalize import canonical_text
from schemas.policies import AutoFaqPolicy
from stores.audit import MissSummary
from tasks._policies import stage_task
from tasks._warm import frequent_misses

__all__ = ["MISS_PREFIX", "AutoFaqPolicy", "draft_miss_questions", "miss_questions"]

MISS_PREFIX: Final = "miss-"
"""Entry ids of drafts: the prefix and a digest of the canonical question."""


def miss_entry_id(question: str) -> str:
    """The draft's entry id: stable for every spelling of the same canonical question."""
    return MISS_PREFIX + content_hash(canonical_text(question), 12)


def miss_questions(
    misses: Sequence[MissSummary], compiled: Sequence[Question], policy: AutoFaqPolicy
) -> list[Question]:
    """Questions for the most frequent misses asked ``min_asked`` times or more, leaving out any
    that a compiled question (or one of its phrasings) already asks."""
    if policy.min_asked <= 0 or policy.limit <= 0:
        return []
    asked = {canonical_text(text) for q in compiled for text in (q.text, *q.paraphrases)}
    drafts: list[Question] = []
    for miss in sorted(misses, key=lambda m: (-m.count, m.normalized)):
        canonical = canonical_text(miss.example)
        question = miss.example.strip()
        if miss.count < policy.min_asked or not canonical or not question:
            continue
        if canonical in asked:
            continue
        asked.add(canonical)
        drafts.append(Question(entry_id=miss_entry_id(question), text=question, origin="miss"))
        if len(drafts) == policy.limit:
            break
    return drafts


@stage_task(retries=2)
def draft_miss_questions(
    store_url: str, compiled: list[Question], policy: AutoFaqPolicy
) -> list[Question]:
    """Prefect task over :func:`miss_questions`, reading the service's miss log (the warm
    tier's, else the store's SQLite file's)."""
    if policy.min_asked <= 0 or policy.limit <= 0:
        return []
    # more than the limit: some are asked by compiled questions already
    misses = frequent_misses(store_url, limit=policy.limit + len(compiled))
    return miss_questions(misses, compiled, policy)
