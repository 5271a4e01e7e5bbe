"""Stage 2 — parse & chunk: headings of every format, anchors, chunk boundaries and ids."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from schemas.build import Chunk, CuratedFaq, IngestReport, SourceDoc, SourceKind
from schemas.records import Source
from tasks._parse import ParsedSection, parse_document, text_to_markdown
from tasks.chunk import chunk_source, faq_chunks, slugify

MARKDOWN = """\
Intro text before any heading.

# Refund policy

Opening paragraph of the policy.

## Return window

You can return a bike within 30 days.

### Damaged items

Damaged items are replaced for free.

## Shipping

Shipping takes five days.
"""

HTML = (
    "<html><body><h1>Help centre</h1><p>Welcome to the help centre.</p>"
    "<h2>Opening hours</h2><p>We are open from nine to five on weekdays.</p>"
    "<h3>Holidays</h3><p>We close on public holidays.</p>"
    "<h2>Contact</h2><p>Write to us by email.</p></body></html>"
)

TEXT = """\
Store guide

Some intro text here for the guide.

Opening hours
We are open from nine to five.

- first item
- second item

Parking
There is free parking behind the shop.
"""


def _source(root: Path, rel: str, content: str, kind: SourceKind) -> SourceDoc:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(content, encoding="utf-8")
    data = path.read_bytes()
    return SourceDoc(
        doc_id=path.stem,
        path=rel,
        kind=kind,
        sha256=hashlib.sha256(data).hexdigest(),
        bytes=len(data),
        modified="2026-01-01",
    )


# --- text_to_markdown -------------------------------------------------------------------------


def test_the_first_heading_like_line_is_the_title() -> None:
    assert text_to_markdown("Store guide\n\nWelcome to the store.") == (
        "# Store guide\n\nWelcome to the store.\n"
    )


def test_a_paragraph_before_the_title_is_kept_as_body() -> None:
    text = "this opening paragraph is body text.\n\nReal Title\n\nBody."
    assert text_to_markdown(text) == (
        "this opening paragraph is body text.\n\n# Real Title\n\nBody.\n"
    )


@pytest.mark.parametrize(
    "heading",
    ["Opening hours", "2024 plans", "Can I pay by card?", "Returns and refunds (EU)"],
)
def test_a_short_line_opening_body_text_is_a_heading(heading: str) -> None:
    text = f"Title\n\n{heading}\nWe are open from nine to five."
    assert text_to_markdown(text) == f"# Title\n\n## {heading}\n\nWe are open from nine to five.\n"


def test_a_short_line_alone_in_its_block_is_a_heading() -> None:
    assert text_to_markdown("Title\n\nParking\n\nFree parking.") == (
        "# Title\n\n## Parking\n\nFree parking.\n"
    )


@pytest.mark.parametrize(
    "block",
    [
        "- first item\nsecond line",
        "* starred item\nmore",
        "1. Step one\nmore",
        "2) Step two\nmore",
        "\u2022 Bullet point\nmore",
        "This is a sentence.\nAnd more body.",
        "Ends with a comma,\nthen continues",
        "Note;\nbody",
        "Wow!\nbody",
        "lower case start\nbody",
        "One two three four five six seven eight nine ten eleven twelve thirteen\nbody",
        "A" * 91 + "\nbody",
    ],
)
def test_list_items_sentences_and_long_lines_are_not_headings(block: str) -> None:
    assert text_to_markdown(f"Title\n\n{block}") == f"# Title\n\n{block}\n"


def test_windows_line_endings_are_understood() -> None:
    assert text_to_markdown("Title\r\n\r\nSection\r\nBody") == "# Title\n\n## Section\n\nBody\n"


# --- parse_document ---------------------------------------------------------------------------


def test_markdown_sections_keep_their_heading_paths(tmp_path: Path) -> None:
    source = _source(tmp_path, "refunds.md", MARKDOWN, "markdown")
    assert parse_document(tmp_path / source.path, "markdown") == [
        ParsedSection(heading_path=(), text="Intro text before any heading."),
        ParsedSection(heading_path=("Refund policy",), text="Opening paragraph of the policy."),
        ParsedSection(
            heading_path=("Refund policy", "Return window"),
            text="You can return a bike within 30 days.",
        ),
        ParsedSection(
            heading_path=("Refund policy", "Return window", "Damaged items"),
            text="Damaged items are replaced for free.",
        ),
        ParsedSection(heading_path=("Refund policy", "Shipping"), text="Shipping takes five days."),
    ]


def test_html_headings_nest_and_a_sibling_closes_the_deeper_level(tmp_path: Path) -> None:
    _source(tmp_path, "help.html", HTML, "html")
    sections = parse_document(tmp_path / "help.html", "html")
    assert [s.heading_path for s in sections] == [
        ("Help centre",),
        ("Help centre", "Opening hours"),
        ("Help centre", "Opening hours", "Holidays"),
        ("Help centre", "Contact"),
    ]
    assert sections[2].text == "We close on public holidays."


def test_plain_text_headings_are_recognised(tmp_path: Path) -> None:
    _source(tmp_path, "guide.txt", TEXT, "text")
    sections = parse_document(tmp_path / "guide.txt", "text")
    assert [s.heading_path for s in sections] == [
        ("Store guide",),
        ("Store guide", "Opening hours"),
        ("Store guide", "Parking"),
    ]
    assert sections[0].text == "Some intro text here for the guide."
    assert "We are open from nine to five." in sections[1].text
    assert "first item" in sections[1].text
    assert sections[2].text == "There is free parking behind the shop."


def test_plain_text_before_the_title_has_an_empty_heading_path(tmp_path: Path) -> None:
    _source(tmp_path, "notes.txt", "draft notes kept for the team.\n\nTitle\n\nBody.\n", "text")
    sections = parse_document(tmp_path / "notes.txt", "text")
    assert sections[0] == ParsedSection(heading_path=(), text="draft notes kept for the team.")
    assert sections[1] == ParsedSection(heading_path=("Title",), text="Body.")


# --- slugify ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("heading", "anchor"),
    [
        ("Return window", "return-window"),
        ("What's new?", "whats-new"),
        ("C++ & Rust", "c--rust"),
        ("  Padded  ", "padded"),
        ("\u00dcn\u00efcode T\u00edtulo", "\u00fcn\u00efcode-t\u00edtulo"),
        ("snake_case and-dash", "snake_case-and-dash"),
        ("Step 1.2", "step-12"),
        ("\uff26\uff35\uff2c\uff2c width", "full-width"),
        ("emoji \U0001f642 here", "emoji--here"),
        ("!!!", "section"),
        ("", "section"),
    ],
)
def test_slugify_makes_github_style_anchors(heading: str, anchor: str) -> None:
    assert slugify(heading) == anchor


@given(st.text())
def test_slugify_output_holds_only_word_characters_and_dashes(heading: str) -> None:
    assert re.fullmatch(r"[\w-]+", slugify(heading))


# --- chunk_source -----------------------------------------------------------------------------


@pytest.fixture
def guide(tmp_path: Path) -> SourceDoc:
    """A markdown guide with a repeated heading and one long section."""
    long_body = " ".join(
        f"Sentence number {i} explains one more detail about returning a bike." for i in range(40)
    )
    content = (
        "# Guide\n\n"
        "## FAQ\n\nFirst set of questions.\n\n"
        f"## Returns\n\n{long_body}\n\n"
        "## FAQ\n\nSecond set of questions.\n\n"
        "## FAQ\n\nThird set of questions.\n"
    )
    return _source(tmp_path, "docs/guide.md", content, "markdown")


def test_repeated_headings_get_numbered_anchors(tmp_path: Path, guide: SourceDoc) -> None:
    chunks = chunk_source(tmp_path, guide, chunk_tokens=64)
    faq = [(c.section, c.anchor, c.text) for c in chunks if c.section == "FAQ"]
    assert faq == [
        ("FAQ", "faq", "First set of questions."),
        ("FAQ", "faq-1", "Second set of questions."),
        ("FAQ", "faq-2", "Third set of questions."),
    ]


def test_every_chunk_knows_where_it_came_from(tmp_path: Path, guide: SourceDoc) -> None:
    chunks = chunk_source(tmp_path, guide, chunk_tokens=64)
    assert chunks
    for order, chunk in enumerate(chunks):
        assert chunk.doc_id == "guide"
        assert chunk.path == "docs/guide.md"
        assert chunk.section == chunk.heading_path[-1]
        assert chunk.anchor == slugify(chunk.section) or chunk.anchor.startswith(
            slugify(chunk.section) + "-"
        )
        assert chunk.title == "Guide"
        assert chunk.order == order
        assert chunk.text


def test_a_long_section_is_split_and_every_piece_keeps_the_section(
    tmp_path: Path, guide: SourceDoc
) -> None:
    chunks = chunk_source(tmp_path, guide, chunk_tokens=64)
    returns = [c for c in chunks if c.section == "Returns"]
    assert len(returns) > 3
    assert {(c.anchor, c.heading_path) for c in returns} == {("returns", ("Guide", "Returns"))}
    text = " ".join(c.text for c in returns)
    assert "Sentence number 0 " in text
    assert "Sentence number 39 " in text
    assert len({c.id for c in returns}) == len(returns)


def test_a_larger_chunk_size_gives_fewer_chunks(tmp_path: Path, guide: SourceDoc) -> None:
    small = chunk_source(tmp_path, guide, chunk_tokens=64)
    large = chunk_source(tmp_path, guide)
    assert len(large) < len(small)
    assert list(dict.fromkeys(c.anchor for c in large)) == ["faq", "returns", "faq-1", "faq-2"]


def test_chunk_ids_are_deterministic(tmp_path: Path, guide: SourceDoc) -> None:
    first = chunk_source(tmp_path, guide, chunk_tokens=64)
    second = chunk_source(tmp_path, guide, chunk_tokens=64)
    assert first == second
    assert len({c.id for c in first}) == len(first)


def test_chunk_ids_change_with_the_text(tmp_path: Path, guide: SourceDoc) -> None:
    before = {c.anchor: c.id for c in chunk_source(tmp_path, guide)}
    path = tmp_path / guide.path
    path.write_text(path.read_text().replace("Second set", "Another set"), encoding="utf-8")
    after = {c.anchor: c.id for c in chunk_source(tmp_path, guide)}
    assert before.keys() == after.keys()
    assert {a for a in before if before[a] != after[a]} == {"faq-1"}


def test_text_before_the_first_heading_is_filed_under_the_title(tmp_path: Path) -> None:
    source = _source(tmp_path, "refunds.md", MARKDOWN, "markdown")
    first = chunk_source(tmp_path, source)[0]
    assert (first.text, first.section, first.heading_path) == (
        "Intro text before any heading.",
        "Refund policy",
        ("Refund policy",),
    )


def test_a_document_without_headings_is_filed_under_its_doc_id(tmp_path: Path) -> None:
    source = _source(tmp_path, "plain.md", "just some words without a heading.\n", "markdown")
    (chunk,) = chunk_source(tmp_path, source)
    assert (chunk.section, chunk.anchor, chunk.title) == ("plain", "plain", "plain")


def test_a_heading_that_occurs_once_keeps_its_plain_anchor(tmp_path: Path) -> None:
    source = _source(tmp_path, "refunds.md", MARKDOWN, "markdown")
    chunks = chunk_source(tmp_path, source)
    (policy,) = [c for c in chunks if c.text == "Opening paragraph of the policy."]
    assert policy.anchor == "refund-policy"


def test_anchors_are_unique_even_when_a_heading_looks_numbered(tmp_path: Path) -> None:
    content = "# Guide\n\n## Step\n\nOne.\n\n## Step\n\nTwo.\n\n## Step 1\n\nThree.\n"
    source = _source(tmp_path, "steps.md", content, "markdown")
    anchors = [c.anchor for c in chunk_source(tmp_path, source)]
    assert len(set(anchors)) == len(anchors)


# --- faq_chunks -------------------------------------------------------------------------------


def _faq(ident: str, question: str, answer: str, doc_id: str = "faq") -> CuratedFaq:
    path = f"{doc_id}.faq.jsonl" if doc_id != "faq" else "faq.jsonl"
    return CuratedFaq(
        id=ident,
        question=question,
        answer=answer,
        source=Source(doc_id=doc_id, path=path, section=question, anchor=ident),
    )


def test_each_faq_entry_becomes_one_chunk() -> None:
    report = IngestReport(
        sources=(),
        faqs=(
            _faq("refund.window", "How long can I return?", "30 days."),
            _faq("billing.card", "Do you take cards?", "Yes.", doc_id="billing"),
        ),
    )
    chunks = faq_chunks(report)
    assert [
        (c.doc_id, c.path, c.section, c.anchor, c.heading_path, c.text, c.order, c.title)
        for c in chunks
    ] == [
        (
            "faq",
            "faq.jsonl",
            "How long can I return?",
            "refund.window",
            ("How long can I return?",),
            "30 days.",
            0,
            "How long can I return?",
        ),
        (
            "billing",
            "billing.faq.jsonl",
            "Do you take cards?",
            "billing.card",
            ("Do you take cards?",),
            "Yes.",
            1,
            "Do you take cards?",
        ),
    ]
    assert len({c.id for c in chunks}) == 2
    assert faq_chunks(report) == chunks


def test_a_changed_faq_answer_changes_its_chunk_id() -> None:
    def chunk_of(answer: str) -> Chunk:
        (chunk,) = faq_chunks(IngestReport(sources=(), faqs=(_faq("a", "Q?", answer),)))
        return chunk

    assert chunk_of("Yes.").id != chunk_of("No.").id
    assert chunk_of("Yes.").id == chunk_of("Yes.").id


def test_no_faqs_give_no_chunks() -> None:
    assert faq_chunks(IngestReport(sources=())) == []
