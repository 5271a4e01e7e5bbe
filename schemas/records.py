"""Typed artifact records: what a snapshot holds and what every store returns.

All records are frozen msgspec structs; they cross process and storage boundaries as JSON.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import msgspec

__all__ = [
    "Approval",
    "ExactAnswer",
    "FallbackAnswer",
    "IntentTemplate",
    "SlotKind",
    "SlotSpec",
    "Source",
    "TopicBlock",
    "TopicPassage",
    "render_passages",
]

SlotKind = Literal["number", "duration", "date", "enum"]
Approval = Literal["", "auto", "curated", "review"]
"""How an answer was approved: by its verification score (``auto``), as a curated FAQ
(``curated``), or by a person in the review queue (``review``); ``""`` while it is not."""


class Source(msgspec.Struct, frozen=True, kw_only=True):
    """The section of a document an answer cites."""

    doc_id: str
    """File stem of the document (``refunds`` for ``policies/refunds.md``)."""
    path: str
    """Path of the document relative to the knowledge folder."""
    section: str
    """Heading text of the cited section."""
    anchor: str
    """URL fragment of the section (``return-window``)."""

    @property
    def ref(self) -> str:
        """``path#anchor``, the citation form."""
        return f"{self.path}#{self.anchor}" if self.anchor else self.path


class ExactAnswer(msgspec.Struct, frozen=True, kw_only=True):
    """L1: an approved answer served verbatim for a question's canonical form."""

    id: str
    question: str
    """The canonical question, as a person would read it."""
    answer: str
    sources: tuple[Source, ...] = ()
    aliases: tuple[str, ...] = ()
    """Other phrasings whose canonical form is served this answer exactly."""
    alternates: tuple[Source, ...] = ()
    """Sections elsewhere that answer the same question (merged duplicates); not cited."""
    topic: str | None = None
    domain: str = "general"
    language: str = "en"
    tenant: str | None = None
    confidence: float = 1.0
    approved_via: Approval = ""
    approved_by: str = ""
    approved_at: str = ""

    @property
    def phrasings(self) -> tuple[str, ...]:
        """The question followed by its aliases: every phrasing keyed in L1."""
        return (self.question, *self.aliases)


class SlotSpec(msgspec.Struct, frozen=True, kw_only=True):
    """One typed slot of an intent template."""

    name: str
    kind: SlotKind
    values: tuple[str, ...] = ()
    """Allowed values of an ``enum`` slot."""
    required: bool = False
    default: str | None = None


class IntentTemplate(msgspec.Struct, frozen=True, kw_only=True):
    """L2: an approved answer template reached by intent classification."""

    intent: str
    template: str
    """Answer text; ``{slot}`` placeholders are filled from the question's slots."""
    slots: tuple[SlotSpec, ...] = ()
    static_context: str = ""
    examples: tuple[str, ...] = ()
    """Phrasings the router learns this intent from."""
    sources: tuple[Source, ...] = ()
    alternates: tuple[Source, ...] = ()
    """Sections elsewhere that answer the same question (merged duplicates); not cited."""
    topic: str | None = None
    domain: str = "general"
    language: str = "en"
    tenant: str | None = None
    confidence: float = 1.0
    approved_via: Approval = ""
    approved_by: str = ""
    approved_at: str = ""


class TopicPassage(msgspec.Struct, frozen=True, kw_only=True):
    """One document passage of a topic block."""

    heading: str
    """The section's heading path, ``A > B``."""
    ref: str
    """The :attr:`Source.ref` of the section it quotes."""
    text: str

    def render(self) -> str:
        """The passage as the composer reads it: a heading line with its reference, the text."""
        return f"## {self.heading} [{self.ref}]\n{self.text}"


class TopicBlock(msgspec.Struct, frozen=True, kw_only=True):
    """L3: a curated knowledge brief for one topic."""

    topic: str
    title: str
    context: str
    """The passages rendered one after another: what the composer reads."""
    tokens: int
    freshness: str
    """Date (ISO 8601) of the newest source the block was built from."""
    sources: tuple[Source, ...] = ()
    intents: tuple[str, ...] = ()
    domain: str = "general"
    language: str = "en"
    tenant: str | None = None
    passages: tuple[TopicPassage, ...] = ()
    """The passages of :attr:`context`, each with the section it quotes (empty in blocks
    compiled before passages were kept: their answers cite every source)."""


def render_passages(passages: Sequence[TopicPassage]) -> str:
    """A topic block's :attr:`TopicBlock.context` from its passages."""
    return "\n\n".join(p.render() for p in passages)


class FallbackAnswer(msgspec.Struct, frozen=True, kw_only=True):
    """SAFE: the vetted answer given when nothing in the snapshot fits."""

    domain: str
    text: str
    language: str = "en"
