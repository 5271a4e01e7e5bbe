"""Records that cross compile-stage boundaries (ingest -> chunk -> ... -> artifacts)."""

from __future__ import annotations

from typing import Literal

import msgspec

from schemas.records import Approval, SlotSpec, Source

__all__ = [
    "Chunk",
    "CuratedFaq",
    "Entry",
    "IngestReport",
    "OutOfScopeExample",
    "Question",
    "RegressionCase",
    "SkippedSource",
    "SourceDoc",
    "Topic",
    "Usage",
]

SourceKind = Literal["markdown", "html", "text", "pdf", "docx", "faq", "out_of_scope"]


class SourceDoc(msgspec.Struct, frozen=True, kw_only=True):
    """One usable file of the knowledge folder."""

    doc_id: str
    """File stem (``refunds`` for ``policies/refunds.md``)."""
    path: str
    """Path relative to the knowledge folder, with forward slashes."""
    kind: SourceKind
    sha256: str
    bytes: int
    modified: str
    """Last modification date (ISO 8601), for topic freshness."""


class SkippedSource(msgspec.Struct, frozen=True, kw_only=True):
    """A file the compile could not use, and why."""

    path: str
    reason: str


class CuratedFaq(msgspec.Struct, frozen=True, kw_only=True):
    """A curated question/answer pair from a FAQ file; its id is kept as the entry id."""

    id: str
    question: str
    answer: str
    paraphrases: tuple[str, ...] = ()
    source: Source
    template: str | None = None
    """An L2 template with ``{slot}`` placeholders, used when the question fills its slots."""
    slots: tuple[SlotSpec, ...] = ()


class OutOfScopeExample(msgspec.Struct, frozen=True, kw_only=True):
    """A question the knowledge deliberately does not answer (trains the router to abstain)."""

    question: str


class IngestReport(msgspec.Struct, frozen=True, kw_only=True):
    """What ingest found: usable sources, curated FAQ entries, out-of-scope examples, skips."""

    sources: tuple[SourceDoc, ...]
    faqs: tuple[CuratedFaq, ...] = ()
    out_of_scope: tuple[OutOfScopeExample, ...] = ()
    skipped: tuple[SkippedSource, ...] = ()


class Chunk(msgspec.Struct, frozen=True, kw_only=True):
    """A heading-bounded piece of a document that knows where it came from."""

    id: str
    doc_id: str
    path: str
    section: str
    anchor: str
    heading_path: tuple[str, ...]
    text: str
    order: int
    """Position of the chunk in its document."""
    title: str = ""
    """The document's title (its first heading)."""


class Topic(msgspec.Struct, frozen=True, kw_only=True):
    """A cluster of chunks about one subject."""

    id: str
    name: str
    chunk_ids: tuple[str, ...]


QuestionOrigin = Literal["faq", "heading", "miss", "synthesized", "title"]
"""Where a question came from: a curated FAQ, a section's heading or title, a provider's
synthesis, or the service's miss log (an auto-FAQ draft, :mod:`tasks.auto_faq`)."""


class Question(msgspec.Struct, frozen=True, kw_only=True):
    """A question users will ask, with where it came from and its paraphrases."""

    entry_id: str
    text: str
    origin: QuestionOrigin
    paraphrases: tuple[str, ...] = ()
    topic: str | None = None
    anchor_chunk: str | None = None
    """The chunk the question was drawn from (its answer's first candidate)."""


EntryStatus = Literal["approved", "pending", "rejected"]


class Entry(msgspec.Struct, frozen=True, kw_only=True):
    """A question with its grounded, verified answer: what L1/L2 are compiled from."""

    id: str
    question: str
    answer: str
    sources: tuple[Source, ...]
    paraphrases: tuple[str, ...] = ()
    topic: str | None = None
    origin: QuestionOrigin = "synthesized"
    score: float = 0.0
    """Verification score in [0, 1]."""
    status: EntryStatus = "pending"
    approved_via: Approval = ""
    approved_by: str = ""
    """Who or what approved it: the reviewer, the FAQ file, or the score rule."""
    approved_at: str = ""
    evidence: tuple[str, ...] = ()
    """Ids of the chunks the answer was drawn from and is verified against."""
    fingerprint: str = ""
    """Hash of the answer and of the evidence it was built from: a review decision holds while
    this is unchanged."""
    note: str = ""
    """Why the entry was dropped or held, when it was."""
    template: str | None = None
    slots: tuple[SlotSpec, ...] = ()


class RegressionCase(msgspec.Struct, frozen=True, kw_only=True):
    """One labelled query: the eval/regression format of ``../shared/eval/README.md``."""

    query: str
    accept: tuple[dict[str, str], ...] = ()
    oos_type: str | None = None


class Usage(msgspec.Struct, kw_only=True):
    """Calls and tokens one stage spent."""

    stage: str
    calls: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_input_tokens: int = 0
    cache_creation_input_tokens: int = 0
