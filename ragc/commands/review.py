"""``ragc review`` and ``ragc misses``: the review queue and the miss log of the warm tier."""

from __future__ import annotations

import os
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Annotated, Literal

import typer

from ragc.commands._base import (
    JsonOpt,
    StoreOpt,
    app,
    emit,
    emit_rows,
    fails_cleanly,
    opened_warm,
)
from schemas.errors import InvalidInputError

if TYPE_CHECKING:
    from stores.review import ReviewQueue

review_app = typer.Typer(help="The review queue: list, approve, reject or edit answers.")
app.add_typer(review_app, name="review")
ByOpt = Annotated[str, typer.Option("--by", help="Reviewer name (default: $USER).")]
Decision = Literal["approved", "rejected"]
EntryArg = Annotated[str, typer.Argument(help="Entry id.")]


def _queue(store: str | None) -> AbstractContextManager[ReviewQueue]:
    """The review queue: the warm tier's (``RAGC_WARM_DSN``), else the SQLite store's."""
    from stores.warm import WarmTier  # noqa: PLC0415

    return opened_warm(store, WarmTier.review_queue, "the review queue")


@review_app.command("list")
@fails_cleanly
def review_list(
    status: Annotated[
        str | None, typer.Option(help="pending, approved or rejected (default: all).")
    ] = "pending",
    store: StoreOpt = "",
    as_json: JsonOpt = False,
) -> None:
    """List answers in the review queue."""
    if status not in (None, "pending", "approved", "rejected"):
        raise InvalidInputError(f"unknown status {status!r}", hint="pending, approved or rejected")
    with _queue(store) as queue:
        items = queue.items(status)  # type: ignore[arg-type]
    emit_rows(
        items,
        as_json,
        ("entry", "status", "score", "question", "answer", "why held"),
        lambda i: (i.entry_id, i.status, f"{i.score:.2f}", i.question, i.answer[:80], i.reason),
        f"no {status or ''} answers in the review queue",
    )


def _decide(
    entry_id: str,
    status: Decision,
    by: str,
    store: str,
    answer: str | None,
    as_json: bool,
) -> None:
    with _queue(store) as queue:
        item = queue.decide(
            entry_id, status, reviewer=by or os.environ.get("USER", "cli"), answer=answer
        )
    emit(
        item,
        as_json,
        f"{item.entry_id}: {item.status} by {item.reviewer} (applies from the next compile)",
    )


def _decision(status: Decision, summary: str) -> Callable[..., None]:
    """The command that records one kind of decision on an entry."""

    def decide(
        entry_id: EntryArg, by: ByOpt = "", store: StoreOpt = "", as_json: JsonOpt = False
    ) -> None:
        _decide(entry_id, status, by, store, None, as_json)

    decide.__doc__ = summary
    return fails_cleanly(decide)


review_app.command("approve")(
    _decision("approved", "Approve an answer; the next compile serves it.")
)
review_app.command("reject")(
    _decision("rejected", "Reject an answer; the next compile leaves it out.")
)


@review_app.command("edit")
@fails_cleanly
def review_edit(
    entry_id: EntryArg,
    answer: Annotated[str, typer.Option("--answer", help="The corrected answer text.")],
    by: ByOpt = "",
    store: StoreOpt = "",
    as_json: JsonOpt = False,
) -> None:
    """Replace an answer's text and approve it."""
    if not answer.strip():
        raise InvalidInputError("the edited answer is empty", hint="pass --answer 'text'")
    _decide(entry_id, "approved", by, store, answer.strip(), as_json)


@app.command()
@fails_cleanly
def misses(
    store: StoreOpt = "",
    tenant: Annotated[str | None, typer.Option(help="Only this tenant's misses.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=1000, help="Most frequent N.")] = 20,
    as_json: JsonOpt = False,
) -> None:
    """Questions answered with the fallback, most frequent first (fold them into the next
    compile: the frequent ones are auto-FAQ suggestions)."""
    from stores.warm import WarmTier  # noqa: PLC0415

    with opened_warm(store, WarmTier.audit_log, "the miss log") as log:
        found = log.misses(tenant=tenant, limit=limit)
    emit_rows(
        found,
        as_json,
        ("count", "question", "best guess", "score", "tenants", "last seen"),
        lambda m: (
            str(m.count),
            m.example,
            m.best_guess or "-",
            f"{m.best_score:.2f}",
            ",".join(m.tenants) or "-",
            m.last_seen,
        ),
        "no misses logged",
    )
