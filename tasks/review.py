"""Stage 8 — review: apply the review policy and the decisions people already made.

Curated FAQ answers are approved as curated. A generated answer with a standing decision for
its fingerprint gets that decision (an edited answer replaces the generated one). Otherwise the
policy decides: ``auto`` approves answers whose verification score clears the threshold,
``sample`` also holds a fixed share of them for a person, ``full`` holds every one; an
auto-FAQ draft (a question from the miss log, :mod:`tasks.auto_faq`) is held whatever the
policy. Held answers wait in the queue and are left out of the snapshot until approved.

An entry that answers the same question as its duplicate group's canonical entry differently (a
``held`` member, see :mod:`tasks.duplicates`) is held whatever the policy, with a reason naming
both sections; the decision is bound to both answers' fingerprints. Approving it merges it into
the canonical entry (its phrasings route there, its section is cited as an alternate);
rejecting it leaves it out. Until then the canonical entry serves the question alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

import msgspec

from schemas.build import Entry
from schemas.manifest import DuplicateGroup, DuplicateMember
from schemas.policies import ReviewPolicy
from schemas.rollout import canary_bucket
from stores.review import ReviewItem, ReviewQueue
from tasks._policies import stage_task
from tasks._warm import open_review_queue
from tasks.duplicates import conflict_fingerprint

__all__ = ["ReviewPolicy", "apply_review", "review_answers"]


def _item(entry: Entry) -> ReviewItem:
    return ReviewItem(
        entry_id=entry.id,
        fingerprint=entry.fingerprint,
        question=entry.question,
        answer=entry.answer,
        score=entry.score,
        sources=tuple(s.ref for s in entry.sources),
    )


class _Conflict(msgspec.Struct, frozen=True, kw_only=True):
    member: DuplicateMember
    canonical: DuplicateMember
    canonical_entry: Entry


def _conflicts(
    entries: Sequence[Entry], duplicates: Sequence[DuplicateGroup]
) -> dict[str, _Conflict]:
    by_id = {e.id: e for e in entries}
    found = {}
    for group in duplicates:
        lead = group.members[0]
        if lead.entry_id not in by_id:
            continue
        for member in group.members[1:]:
            if member.status == "held":
                found[member.entry_id] = _Conflict(
                    member=member, canonical=lead, canonical_entry=by_id[lead.entry_id]
                )
    return found


def _conflict_reason(conflict: _Conflict) -> str:
    member, lead = conflict.member, conflict.canonical
    return (
        f"duplicate question answered differently: {member.section.ref} "
        f"({member.question!r}) and {lead.section.ref} ({lead.question!r}, the canonical "
        f"entry {lead.entry_id}); answer similarity {member.answer_similarity:.2f}"
    )


def _review_conflict(
    entry: Entry,
    conflict: _Conflict,
    queue_decided: dict[tuple[str, str], ReviewItem],
    held: list[ReviewItem],
) -> Entry:
    fingerprint = conflict_fingerprint(entry, conflict.canonical_entry)
    decision = queue_decided.get((entry.id, fingerprint))
    if decision is not None:
        approved = decision.status == "approved"
        return msgspec.structs.replace(
            entry,
            status=decision.status,
            answer=decision.answer,
            approved_via="review" if approved else "",
            approved_by=decision.reviewer if approved else "",
            approved_at=decision.decided_at if approved else "",
            note=f"merged into {conflict.canonical.entry_id} in review"
            if approved
            else "rejected in review (duplicate)",
        )
    reason = _conflict_reason(conflict)
    held.append(msgspec.structs.replace(_item(entry), fingerprint=fingerprint, reason=reason))
    return msgspec.structs.replace(entry, status="pending", note=reason)


def apply_review(
    entries: Sequence[Entry],
    policy: ReviewPolicy,
    queue: ReviewQueue | None,
    duplicates: Sequence[DuplicateGroup] = (),
) -> list[Entry]:
    """Entries with their review status; held ones are submitted to ``queue``. Conflicting
    members of ``duplicates`` groups are held for a person whatever the policy."""
    now = datetime.now(UTC).isoformat(timespec="seconds")
    decided = queue.decisions() if queue else {}
    conflicts = _conflicts(entries, duplicates)
    out: list[Entry] = []
    held: list[ReviewItem] = []
    for entry in entries:
        if entry.status == "rejected":
            out.append(entry)
            continue
        if entry.id in conflicts:
            out.append(_review_conflict(entry, conflicts[entry.id], decided, held))
            continue
        if entry.origin == "faq":
            path = entry.sources[0].path if entry.sources else "faq"
            out.append(
                msgspec.structs.replace(
                    entry,
                    status="approved",
                    approved_via="curated",
                    approved_by=path,
                    approved_at=now,
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
                    approved_via="review" if decision.status == "approved" else "",
                    approved_by=decision.reviewer,
                    approved_at=decision.decided_at,
                    note="" if decision.status == "approved" else "rejected in review",
                )
            )
            continue
        if entry.origin == "miss":  # a user's question drafted from the miss log: a person decides
            note = "auto-FAQ draft for a frequent miss: waiting for review"
            out.append(msgspec.structs.replace(entry, status="pending", note=note))
            held.append(_item(entry))
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
                approved_via="auto",
                approved_by=f"score>={policy.threshold:g}",
                approved_at=now,
            )
        )
    if queue and held:
        queue.submit(held)
    return out


@stage_task(retries=0)
def review_answers(
    entries: list[Entry],
    policy: ReviewPolicy,
    store_url: str,
    duplicates: tuple[DuplicateGroup, ...] = (),
) -> list[Entry]:
    """Prefect task over :func:`apply_review` (opens and closes the queue itself)."""
    queue = open_review_queue(store_url)
    try:
        return apply_review(entries, policy, queue, duplicates)
    finally:
        if queue:
            queue.close()
