"""Document parsing with unstructured: every format becomes a list of headed sections.

Markdown, HTML and DOCX go straight to unstructured's partitioners. Plain text and PDF text
(extracted with pdfminer.six) carry no markup, so their headings are recognised first (a short
line that does not end a sentence, followed by body text) and the text is partitioned as
markdown, which keeps one code path for turning elements into sections.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Final

import msgspec

from schemas.build import SourceKind
from schemas.errors import InvalidInputError

if TYPE_CHECKING:
    from unstructured.documents.elements import Element

__all__ = ["ParsedSection", "parse_document", "text_to_markdown"]

_HEADING_MAX_WORDS: Final = 12
_SENTENCE_END: Final = re.compile(r"[.,;:!]$")
_LIST_ITEM: Final = re.compile(r"^\s*([-*\u2022]|\d+[.)])\s+")


class ParsedSection(msgspec.Struct, frozen=True, kw_only=True):
    """Body text under one heading path."""

    heading_path: tuple[str, ...]
    text: str


def _looks_like_heading(line: str) -> bool:
    stripped = line.strip()
    return (
        0 < len(stripped) <= 90
        and len(stripped.split()) <= _HEADING_MAX_WORDS
        and not _SENTENCE_END.search(stripped)
        and not _LIST_ITEM.match(stripped)
        and (stripped[0].isupper() or stripped[0].isdigit())
    )


def text_to_markdown(text: str) -> str:
    """Mark the headings of plain text as markdown: the first line is the title (``#``) and a
    heading-like line that opens a block of body text becomes ``##``."""
    blocks = [b.strip("\n") for b in re.split(r"\n\s*\n", text.replace("\r\n", "\n"))]
    out: list[str] = []
    titled = False
    for block in (b for b in blocks if b.strip()):
        lines = block.splitlines()
        first = lines[0].strip()
        following = "\n".join(lines[1:]).strip()
        if not titled and _looks_like_heading(first):
            out.append(f"# {first}")
            titled = True
        elif _looks_like_heading(first) and (following or len(lines) == 1):
            out.append(f"## {first}")
        else:
            out.append(block)
            continue
        if following:
            out.append(following)
    return "\n\n".join(out) + "\n"


def _elements(path: Path, kind: SourceKind) -> list[Element]:
    # unstructured, spaCy and pdfminer load here, when a document is parsed (not on import:
    # they take seconds, and a recompile answered from the build cache parses nothing).
    from pdfminer.high_level import extract_text  # noqa: PLC0415
    from unstructured.partition.docx import partition_docx  # noqa: PLC0415
    from unstructured.partition.html import partition_html  # noqa: PLC0415
    from unstructured.partition.md import partition_md  # noqa: PLC0415

    from tasks._nlp import use_packaged_spacy_model  # noqa: PLC0415

    use_packaged_spacy_model()
    if kind == "markdown":
        return list(partition_md(filename=str(path)))
    if kind == "html":
        return list(partition_html(filename=str(path)))
    if kind == "docx":
        return list(partition_docx(filename=str(path)))
    if kind == "text":
        return list(partition_md(text=text_to_markdown(path.read_text("utf-8-sig"))))
    if kind == "pdf":
        return list(partition_md(text=text_to_markdown(extract_text(str(path)))))
    raise InvalidInputError(f"{path}: {kind} files are not documents")


def parse_document(path: Path, kind: SourceKind) -> list[ParsedSection]:
    """The document's sections in order; text before the first heading gets an empty path."""
    from unstructured.documents.elements import Title  # noqa: PLC0415 - see _elements

    sections: list[ParsedSection] = []
    stack: list[tuple[int, str]] = []
    body: list[str] = []

    def flush() -> None:
        if body:
            sections.append(
                ParsedSection(heading_path=tuple(h for _, h in stack), text="\n".join(body))
            )
            body.clear()

    for element in _elements(path, kind):
        text = (element.text or "").strip()
        if not text:
            continue
        if isinstance(element, Title):
            depth = element.metadata.category_depth
            level = depth if depth is not None else (0 if not stack else stack[-1][0] + 1)
            flush()
            while stack and stack[-1][0] >= level:
                stack.pop()
            stack.append((level, text))
        else:
            body.append(text)
    flush()
    return sections
