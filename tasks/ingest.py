"""Stage 1 — ingest: find every usable file of a knowledge folder and fingerprint it.

Documents (markdown, HTML, text, PDF, DOCX) are fingerprinted by content hash; curated FAQ
files (``faq.jsonl``, ``*.faq.jsonl``, ``faq.csv``, ``*.faq.csv``) and ``out_of_scope.jsonl``
are read into records. Files that cannot be used (empty, binary junk, too large, unknown type)
are reported with the reason and skipped; nothing is silently dropped.
"""

from __future__ import annotations

import csv
import fnmatch
import hashlib
import io
import json
import re
import string
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Final

import msgspec

from schemas.build import (
    CuratedFaq,
    IngestReport,
    OutOfScopeExample,
    SkippedSource,
    SourceDoc,
    SourceKind,
)
from schemas.errors import InvalidInputError
from schemas.records import SlotSpec, Source
from tasks._policies import stage_task

__all__ = [
    "MAX_BYTES",
    "ignore_patterns",
    "ingest_folder",
    "ingest_sources",
    "is_ignored",
    "read_faq",
    "regression_path",
]

MAX_BYTES: Final = 10 * 1024 * 1024
_DOCUMENTS: Final[dict[str, SourceKind]] = {
    ".md": "markdown",
    ".markdown": "markdown",
    ".html": "html",
    ".htm": "html",
    ".txt": "text",
    ".pdf": "pdf",
    ".docx": "docx",
}
_TEXT_KINDS: Final = {"markdown", "html", "text"}
_ENTRY_ID: Final = re.compile(r"^[^\s:]{1,128}\Z")
REGRESSION_FILE: Final = "regression.jsonl"
IGNORE_FILE: Final = ".ragcignore"
OUT_OF_SCOPE_FILE: Final = "out_of_scope.jsonl"


def _faq_stem(name: str) -> str | None:
    """The doc id of a curated FAQ file name, or ``None`` when it is not one."""
    for suffix in (".faq.jsonl", ".faq.csv"):
        if name.endswith(suffix):
            return name.removesuffix(suffix)
    return "faq" if name in ("faq.jsonl", "faq.csv") else None


def _problem(kind: SourceKind, data: bytes) -> str | None:
    """Why ``data`` cannot be read as ``kind``, or ``None`` when it can."""
    if not data.strip():
        return "empty file"
    if kind in _TEXT_KINDS or kind in ("faq", "out_of_scope"):
        if b"\x00" in data:
            return "binary content in a text file (NUL bytes); is it really text?"
        try:
            data.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            return f"not UTF-8 text (byte {exc.start}); save it as UTF-8"
    if kind == "pdf" and not data.startswith(b"%PDF-"):
        return "not a PDF (no %PDF- header)"
    if kind == "docx" and not data.startswith(b"PK\x03\x04"):
        return "not a DOCX file (not a zip archive)"
    return None


def _faq_lines(path: Path, text: str, rel: str) -> list[tuple[int, dict[str, object]]]:
    if path.suffix == ".csv":
        rows = csv.DictReader(io.StringIO(text))
        return [
            (
                number,
                {
                    **row,
                    "paraphrases": [
                        p.strip() for p in (row.get("paraphrases") or "").split("|") if p.strip()
                    ],
                },
            )
            for number, row in enumerate(rows, 2)
        ]
    lines: list[tuple[int, dict[str, object]]] = []
    for number, line in enumerate(text.splitlines(), 1):
        if line.strip():
            try:
                value = json.loads(line)
            except json.JSONDecodeError as exc:
                raise InvalidInputError(
                    f"{rel}:{number}: not JSON ({exc.msg})",
                    hint='each line must be {"id", "question", "answer", "paraphrases"?}',
                ) from exc
            if not isinstance(value, dict):
                raise InvalidInputError(f"{rel}:{number}: a line must be a JSON object")
            lines.append((number, value))
    return lines


def _template(row: dict[str, object], where: str) -> tuple[str | None, tuple[SlotSpec, ...]]:
    """The optional ``template`` and ``slots`` of a FAQ line, checked against each other."""
    template, raw = row.get("template"), row.get("slots") or []
    if template is None and not raw:
        return None, ()
    try:
        slots = msgspec.convert(raw, type=tuple[SlotSpec, ...])
    except msgspec.ValidationError as exc:
        raise InvalidInputError(
            f"{where}: 'slots' is not valid ({exc})",
            hint='each slot is {"name", "kind": number|duration|date|enum, "values"?, '
            '"required"?, "default"?}',
        ) from exc
    if not isinstance(template, str) or not template.strip():
        raise InvalidInputError(f"{where}: 'slots' need a 'template' that uses them")
    try:
        used = {name for _, name, _, _ in string.Formatter().parse(template) if name}
    except ValueError as exc:
        raise InvalidInputError(f"{where}: 'template' is not a valid template ({exc})") from exc
    unknown = used - {s.name for s in slots}
    if unknown:
        raise InvalidInputError(
            f"{where}: 'template' uses undeclared slots {sorted(unknown)}",
            hint="declare every {placeholder} in 'slots'",
        )
    return template, slots


def read_faq(path: Path, rel: str, doc_id: str) -> tuple[CuratedFaq, ...]:
    """Curated entries of one FAQ file; raises :class:`InvalidInputError` on a bad line."""
    text = path.read_bytes().decode("utf-8-sig")
    faqs: list[CuratedFaq] = []
    seen: set[str] = set()
    for number, row in _faq_lines(path, text, rel):
        where = f"{rel}:{number}"
        ident, question, answer = row.get("id"), row.get("question"), row.get("answer")
        for name, value in (("id", ident), ("question", question), ("answer", answer)):
            if not isinstance(value, str) or not value.strip():
                raise InvalidInputError(f"{where}: {name!r} is missing or not a string")
        assert isinstance(ident, str)
        assert isinstance(question, str)
        assert isinstance(answer, str)
        ident = ident.strip()
        if not _ENTRY_ID.match(ident):
            raise InvalidInputError(
                f"{where}: FAQ id {ident!r} is not usable as an entry id",
                hint="use up to 128 characters without spaces or ':'",
            )
        if ident in seen:
            raise InvalidInputError(f"{where}: duplicate FAQ id {ident!r}", hint="ids are unique")
        seen.add(ident)
        paraphrases = row.get("paraphrases") or []
        if not isinstance(paraphrases, list) or not all(isinstance(p, str) for p in paraphrases):
            raise InvalidInputError(f"{where}: 'paraphrases' must be a list of strings")
        template, slots = _template(row, where)
        faqs.append(
            CuratedFaq(
                template=template,
                slots=slots,
                id=ident,
                question=question.strip(),
                answer=answer.strip(),
                paraphrases=tuple(dict.fromkeys(p.strip() for p in paraphrases if p.strip())),
                source=Source(doc_id=doc_id, path=rel, section=question.strip(), anchor=ident),
            )
        )
    return tuple(faqs)


def _out_of_scope(path: Path, rel: str) -> tuple[OutOfScopeExample, ...]:
    examples = []
    for number, row in _faq_lines(path, path.read_bytes().decode("utf-8-sig"), rel):
        question = row.get("question")
        if not isinstance(question, str) or not question.strip():
            raise InvalidInputError(f"{rel}:{number}: 'question' is missing")
        examples.append(OutOfScopeExample(question=question.strip()))
    return tuple(examples)


def regression_path(root: Path) -> Path | None:
    """The regression suite kept in the knowledge folder or beside it, if any."""
    for candidate in (root / REGRESSION_FILE, root.parent / REGRESSION_FILE):
        if candidate.is_file():
            return candidate
    return None


def ignore_patterns(root: Path) -> tuple[str, ...]:
    """Patterns of ``.ragcignore`` in the knowledge folder (gitignore-style, one per line)."""
    path = root / IGNORE_FILE
    if not path.is_file():
        return ()
    lines = (line.strip() for line in path.read_text("utf-8").splitlines())
    return tuple(line for line in lines if line and not line.startswith("#"))


def is_ignored(rel: str, patterns: Sequence[str]) -> bool:
    """Whether a folder-relative path matches a pattern: a pattern without ``/`` matches a name
    anywhere, one with ``/`` matches from the root, and ``dir/`` matches everything below."""
    parts = rel.split("/")
    for raw in patterns:
        pattern = raw.strip("/")
        if raw.endswith("/") and any(
            fnmatch.fnmatchcase("/".join(parts[: i + 1]), pattern)
            or fnmatch.fnmatchcase(part, pattern)
            for i, part in enumerate(parts[:-1])
        ):
            return True
        if "/" in pattern and fnmatch.fnmatchcase(rel, pattern):
            return True
        if "/" not in pattern and any(fnmatch.fnmatchcase(part, pattern) for part in parts):
            return True
    return False


def ingest_folder(root: Path, *, max_bytes: int = MAX_BYTES) -> IngestReport:
    """Walk ``root`` and sort every file into sources, FAQ entries, examples or skips.

    Hidden files, the regression suite and whatever ``.ragcignore`` names are not knowledge.
    """
    if not root.is_dir():
        raise InvalidInputError(
            f"knowledge folder {root} does not exist or is not a folder",
            hint="pass the folder that holds your documents and FAQ files",
        )
    sources: list[SourceDoc] = []
    faqs: list[CuratedFaq] = []
    out_of_scope: list[OutOfScopeExample] = []
    skipped: list[SkippedSource] = []
    ignored = ignore_patterns(root)
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        rel = path.relative_to(root).as_posix()
        if any(part.startswith(".") for part in path.relative_to(root).parts):
            continue
        if is_ignored(rel, ignored):
            continue
        if path.name == REGRESSION_FILE:
            continue
        faq_stem = _faq_stem(path.name)
        kind: SourceKind | None = (
            "faq"
            if faq_stem is not None
            else "out_of_scope"
            if path.name == OUT_OF_SCOPE_FILE
            else _DOCUMENTS.get(path.suffix.lower())
        )
        if kind is None:
            skipped.append(SkippedSource(path=rel, reason=f"unsupported file type {path.suffix!r}"))
            continue
        size = path.stat().st_size
        if size > max_bytes:
            skipped.append(
                SkippedSource(
                    path=rel,
                    reason=f"{size / 2**20:.1f} MiB is over the {max_bytes / 2**20:g} MiB limit",
                )
            )
            continue
        data = path.read_bytes()
        problem = _problem(kind, data)
        if problem:
            skipped.append(SkippedSource(path=rel, reason=problem))
            continue
        doc_id = faq_stem if faq_stem is not None else path.stem
        if kind == "faq":
            faqs.extend(read_faq(path, rel, doc_id))
        elif kind == "out_of_scope":
            out_of_scope.extend(_out_of_scope(path, rel))
        modified = datetime.fromtimestamp(path.stat().st_mtime, UTC).date().isoformat()
        sources.append(
            SourceDoc(
                doc_id=doc_id,
                path=rel,
                kind=kind,
                sha256=hashlib.sha256(data).hexdigest(),
                bytes=size,
                modified=modified,
            )
        )
    return IngestReport(
        sources=tuple(sources),
        faqs=tuple(faqs),
        out_of_scope=tuple(out_of_scope),
        skipped=tuple(skipped),
    )


@stage_task(retries=2)
def ingest_sources(root: str, max_bytes: int = MAX_BYTES) -> IngestReport:
    """Prefect task over :func:`ingest_folder`."""
    return ingest_folder(Path(root), max_bytes=max_bytes)
