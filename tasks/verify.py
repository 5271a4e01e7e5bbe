"""Stage 7 — verification: drop answers their cited text does not support.

The provider judges each generated answer against the chunks it was drawn from (the Anthropic
provider with a second LLM pass; the offline provider by lexical containment of every answer
sentence). The score is recorded on the entry; an unsupported answer is rejected with the reason.
Curated FAQ answers are trusted as written and keep score 1.
"""

from __future__ import annotations

from collections.abc import Sequence

import msgspec

from providers.base import Provider
from schemas.build import Entry
from tasks._policies import stage_task
from tasks.index import ChunkIndex
from tasks.synthesize import passage_of

__all__ = ["check_entries", "verify_answers"]


def check_entries(entries: Sequence[Entry], index: ChunkIndex, provider: Provider) -> list[Entry]:
    """Entries with their verification score; unsupported ones rejected."""
    checked: list[Entry] = []
    for entry in entries:
        if entry.origin == "faq" or entry.status == "rejected":
            checked.append(entry)
            continue
        passages = [passage_of(index.chunks[c]) for c in entry.evidence if c in index.chunks]
        verdict = provider.verify(entry.question, entry.answer, passages)
        checked.append(
            msgspec.structs.replace(
                entry,
                score=verdict.score,
                status=entry.status if verdict.supported else "rejected",
                note=entry.note if verdict.supported else f"unverified: {verdict.reason}",
            )
        )
    return checked


@stage_task(retries=3)
def verify_answers(entries: list[Entry], index: ChunkIndex, provider: Provider) -> list[Entry]:
    """Prefect task over :func:`check_entries`."""
    return check_entries(entries, index, provider)
