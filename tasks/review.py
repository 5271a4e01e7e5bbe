"""Stage 8 — review: apply the review policy and the decisions people already made.

Curated FAQ answers are approved as curated. A generated answer with a standing decision for
its fingerprint gets that decision (an edited answer replaces the generated one). Otherwise the
policy decides: ``auto`` approves answers whose verification score clears the threshold,
``sample`` also holds a fixed share of them for a person, ``full`` holds every one. Held
answers wait in the queue and are left out of the snapshot until approved.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Literal

import msgspec
from pydantic import BaseModel, Field

from schemas.build import Entry
from schemas.rollout import canary_bucket
from stores.review import ReviewItem
from tasks._policies import stage_task
from tasks._warm import Queue, open_review_queue

__all__ = ["ReviewPolicy", "apply_review", "review_answers"]


class ReviewPolicy(BaseModel):
    """How generated answers are approved."""

    mode: Literal["auto", "sample", "full"] = "auto"
    threshold: float = Field(default=0.8, ge=0.0, le=1.0)
    """Minimum verification score for automatic approval."""
    sample_rate: float = Field(default=0.1, ge=0.0, le=1.0)
    """Share of auto-approvable answers held for a person in ``sample`` mode."""


def _item(entry: Entry) -> ReviewItem:
    return ReviewItem(
        entry_id=entry.id,
        fingerprint=entry.fingerprint,
        question=entry.question,
        answer=entry.answer,
        score=entry.score,
        sources=tuple(s.ref for s in entry.sources),
    )


def apply_review(
    entries: Sequence[Entry], policy: ReviewPolicy, queue: Queue | None
) -> list[Entry]:
    """Entries with their review status; held ones are submitted to ``queue``."""
    now = datetime.now(UTC).isoformat(timespec="seconds")
    decided = queue.decisions() if queue else {}
    out: list[Entry] = []
    held: list[ReviewItem] = []
    for entry in entries:
        if entry.status == "rejected":
            out.append(entry)
            continue
        if entry.origin == "faq":
            path = entry.sources[0].path if entry.sources else "faq"
            out.append(
                msgspec.structs.replace(
                    entry, status="approved", approved_by=f"curated:{path}", approved_at=now
                )
            )
            continue
        decision = decided.get((entry.id, entry.fingerprint))
        if decision is not None:
            out.append(
                msgspec.structs.replace(
                    entry,
                    status=decision.status,
                    answer=decision.answer,
                    approved_by=decision.reviewer,
                    approved_at=decision.decided_at,
                    note="" if decision.status == "approved" else "rejected in review",
                )
            )
            continue
        sampled = (
            policy.mode == "sample"
            and canary_bucket(entry.id, entry.fingerprint) < policy.sample_rate * 100
        )
        if policy.mode == "full" or sampled or entry.score < policy.threshold:
            out.append(msgspec.structs.replace(entry, status="pending", note="waiting for review"))
            held.append(_item(entry))
            continue
        out.append(
            msgspec.structs.replace(
                entry,
                status="approved",
                approved_by=f"auto:score>={policy.threshold:g}",
                approved_at=now,
            )
        )
    if queue and held:
        queue.submit(held)
    return out


@stage_task("review-answers", retries=0)
def review_answers(entries: list[Entry], policy: ReviewPolicy, store_url: str) -> list[Entry]:
    """Prefect task over :func:`apply_review` (opens and closes the queue itself)."""
    queue = open_review_queue(store_url)
    try:
        return apply_review(entries, policy, queue)
    finally:
        if queue:
            queue.close()
