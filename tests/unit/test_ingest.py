"""Stage 1 — ingest: which files of a knowledge folder are used, how, and why others are not."""

from __future__ import annotations

import hashlib
import json
from datetime import date
from pathlib import Path

import pytest

from schemas.build import CuratedFaq, IngestReport
from schemas.errors import InvalidInputError
from schemas.records import Source
from tasks.ingest import ingest_folder, is_ignored, read_faq, regression_path

DOCUMENTS: dict[str, tuple[bytes, str]] = {
    "policies/refunds.md": (b"# Refunds\n\nYou can return a bike within 30 days.\n", "markdown"),
    "notes.markdown": (b"# Notes\n\nSome notes.\n", "markdown"),
    "help/hours.html": (b"<h1>Hours</h1><p>We open at nine.</p>", "html"),
    "old.htm": (b"<p>Legacy page.</p>", "html"),
    "readme.txt": (b"Plain text guide\n\nBody text.\n", "text"),
    "manual.pdf": (b"%PDF-1.4\n%fake body but a real header\n", "pdf"),
    "contract.docx": (b"PK\x03\x04" + b"\x00" * 32, "docx"),
}


def _write(root: Path, rel: str, data: bytes | str) -> Path:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(data, str):
        path.write_text(data, encoding="utf-8")
    else:
        path.write_bytes(data)
    return path


def _jsonl(*rows: object) -> str:
    return "".join(json.dumps(row) + "\n" for row in rows)


@pytest.fixture
def knowledge(tmp_path: Path) -> Path:
    """A knowledge folder holding one document of every type plus FAQ files."""
    root = tmp_path / "kb"
    for rel, (data, _) in DOCUMENTS.items():
        _write(root, rel, data)
    _write(
        root,
        "faq.jsonl",
        _jsonl(
            {
                "id": "refund.window",
                "question": "How long do I have to return a bike?",
                "answer": "30 days.",
                "paraphrases": ["What is the return window?", "  ", "Return period?"],
            },
            {"id": "shipping.cost", "question": " What does shipping cost? ", "answer": " 5 EUR. "},
        ),
    )
    _write(
        root,
        "billing.faq.jsonl",
        _jsonl({"id": "billing.card", "question": "Do you take cards?", "answer": "Yes."}),
    )
    _write(
        root,
        "faq.csv",
        "id,question,answer,paraphrases\n"
        'store.hours,When are you open?,Nine to five.,"Opening hours? | When do you open|"\n'
        "store.city,Where is the store?,In Utrecht.,\n",
    )
    _write(root, "out_of_scope.jsonl", _jsonl({"question": "What is the weather?"}))
    return root


@pytest.fixture
def report(knowledge: Path) -> IngestReport:
    """The ingest report of the ``knowledge`` folder."""
    return ingest_folder(knowledge)


@pytest.mark.parametrize(("rel", "kind"), [(rel, kind) for rel, (_, kind) in DOCUMENTS.items()])
def test_each_document_type_is_recognised_with_its_kind_and_hash(
    knowledge: Path, report: IngestReport, rel: str, kind: str
) -> None:
    by_path = {s.path: s for s in report.sources}
    source = by_path[rel]
    data = (knowledge / rel).read_bytes()
    assert source.kind == kind
    assert source.sha256 == hashlib.sha256(data).hexdigest()
    assert source.bytes == len(data)
    assert source.doc_id == Path(rel).stem
    assert date.fromisoformat(source.modified)


def test_a_well_formed_folder_skips_nothing(report: IngestReport) -> None:
    assert report.skipped == ()
    kinds = {s.path: s.kind for s in report.sources}
    assert kinds["faq.jsonl"] == "faq"
    assert kinds["billing.faq.jsonl"] == "faq"
    assert kinds["faq.csv"] == "faq"
    assert kinds["out_of_scope.jsonl"] == "out_of_scope"


def test_sources_are_listed_in_path_order(report: IngestReport) -> None:
    paths = [s.path for s in report.sources]
    assert paths == sorted(paths)


def test_faq_jsonl_entries_keep_their_ids_and_cite_the_faq_file(report: IngestReport) -> None:
    faqs = {f.id: f for f in report.faqs}
    window = faqs["refund.window"]
    assert window == CuratedFaq(
        id="refund.window",
        question="How long do I have to return a bike?",
        answer="30 days.",
        paraphrases=("What is the return window?", "Return period?"),
        source=Source(
            doc_id="faq",
            path="faq.jsonl",
            section="How long do I have to return a bike?",
            anchor="refund.window",
        ),
    )
    shipping = faqs["shipping.cost"]
    assert (shipping.question, shipping.answer, shipping.paraphrases) == (
        "What does shipping cost?",
        "5 EUR.",
        (),
    )


def test_a_named_faq_file_gives_its_stem_as_doc_id(report: IngestReport) -> None:
    (billing,) = [f for f in report.faqs if f.id == "billing.card"]
    assert billing.source.doc_id == "billing"
    assert billing.source.path == "billing.faq.jsonl"
    assert {s.doc_id for s in report.sources if s.path == "billing.faq.jsonl"} == {"billing"}


def test_faq_csv_splits_paraphrases_on_bars(report: IngestReport) -> None:
    faqs = {f.id: f for f in report.faqs}
    assert faqs["store.hours"].paraphrases == ("Opening hours?", "When do you open")
    assert faqs["store.hours"].answer == "Nine to five."
    assert faqs["store.hours"].source.doc_id == "faq"
    assert faqs["store.hours"].source.path == "faq.csv"
    assert faqs["store.city"].paraphrases == ()


def test_every_faq_file_is_read(report: IngestReport) -> None:
    assert sorted(f.id for f in report.faqs) == [
        "billing.card",
        "refund.window",
        "shipping.cost",
        "store.city",
        "store.hours",
    ]


def test_out_of_scope_examples_are_read(report: IngestReport) -> None:
    assert [e.question for e in report.out_of_scope] == ["What is the weather?"]


def test_hidden_files_and_the_regression_suite_are_ignored(knowledge: Path) -> None:
    _write(knowledge, ".draft.md", "# Draft\n\nNot ready.\n")
    _write(knowledge, ".git/config", "[core]\n")
    _write(knowledge, "sub/.cache/page.md", "# Cached\n\nCopy.\n")
    _write(knowledge, "regression.jsonl", _jsonl({"query": "q", "accept": []}))
    report = ingest_folder(knowledge)
    seen = {s.path for s in report.sources} | {s.path for s in report.skipped}
    assert not any("draft" in p or ".git" in p or ".cache" in p for p in seen)
    assert "regression.jsonl" not in seen


@pytest.mark.parametrize(
    ("name", "data", "reason"),
    [
        ("empty.md", b"", "empty file"),
        ("blank.txt", b"  \n\t\n", "empty file"),
        ("binary.md", b"# Title\x00\x01\x02 body", "NUL bytes"),
        ("latin1.txt", "caf\u00e9 cr\u00e8me".encode("latin-1"), "not UTF-8"),
        ("fake.pdf", b"<html>not a pdf</html>", "not a PDF"),
        ("fake.docx", b"plain text, not a zip", "not a DOCX"),
        ("image.png", b"\x89PNG\r\n\x1a\n", "unsupported file type '.png'"),
        ("Makefile", b"all:\n", "unsupported file type ''"),
    ],
)
def test_unusable_files_are_skipped_with_a_reason(
    tmp_path: Path, name: str, data: bytes, reason: str
) -> None:
    _write(tmp_path, "ok.md", "# Fine\n\nText.\n")
    _write(tmp_path, name, data)
    report = ingest_folder(tmp_path)
    assert [s.path for s in report.sources] == ["ok.md"]
    (skipped,) = report.skipped
    assert skipped.path == name
    assert reason in skipped.reason


def test_utf8_with_a_byte_order_mark_is_text(tmp_path: Path) -> None:
    _write(tmp_path, "bom.md", "\ufeff# Title\n\nBody.\n".encode())
    report = ingest_folder(tmp_path)
    assert [s.kind for s in report.sources] == ["markdown"]
    assert report.skipped == ()


def test_files_over_the_size_limit_are_skipped(tmp_path: Path) -> None:
    _write(tmp_path, "small.md", "# S\n\nok\n")
    _write(tmp_path, "big.md", "# Big\n\n" + "word " * 40)
    report = ingest_folder(tmp_path, max_bytes=64)
    assert [s.path for s in report.sources] == ["small.md"]
    (skipped,) = report.skipped
    assert skipped.path == "big.md"
    assert "limit" in skipped.reason


def test_a_file_exactly_at_the_limit_is_used(tmp_path: Path) -> None:
    _write(tmp_path, "edge.md", b"#" * 64)
    report = ingest_folder(tmp_path, max_bytes=64)
    assert [s.path for s in report.sources] == ["edge.md"]


def test_a_missing_folder_is_invalid_input(tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError, match="does not exist"):
        ingest_folder(tmp_path / "nowhere")


def test_a_file_instead_of_a_folder_is_invalid_input(tmp_path: Path) -> None:
    path = _write(tmp_path, "file.md", "# x\n")
    with pytest.raises(InvalidInputError):
        ingest_folder(path)


GOOD = {"id": "a", "question": "Q?", "answer": "A."}


@pytest.mark.parametrize(
    ("lines", "bad_line", "message"),
    [
        ([json.dumps(GOOD), "{not json"], 2, "not JSON"),
        ([json.dumps(GOOD), "", "[1, 2]"], 3, "JSON object"),
        ([json.dumps({"id": "a", "question": "Q?"})], 1, "'answer'"),
        ([json.dumps({"id": "a", "question": "Q?", "answer": "  "})], 1, "'answer'"),
        ([json.dumps({"question": "Q?", "answer": "A."})], 1, "'id'"),
        ([json.dumps({"id": "a", "question": 3, "answer": "A."})], 1, "'question'"),
        ([json.dumps(GOOD), json.dumps(GOOD)], 2, "duplicate FAQ id 'a'"),
        ([json.dumps({**GOOD, "paraphrases": "one, two"})], 1, "'paraphrases'"),
        ([json.dumps({**GOOD, "paraphrases": ["ok", 7]})], 1, "'paraphrases'"),
    ],
)
def test_a_bad_faq_line_names_the_file_and_line(
    tmp_path: Path, lines: list[str], bad_line: int, message: str
) -> None:
    _write(tmp_path, "faq.jsonl", "\n".join(lines) + "\n")
    with pytest.raises(InvalidInputError, match=f"^faq.jsonl:{bad_line}: ") as raised:
        ingest_folder(tmp_path)
    assert message in str(raised.value)


def test_a_bad_faq_csv_row_names_its_line(tmp_path: Path) -> None:
    _write(tmp_path, "faq.csv", "id,question,answer\na,Q1?,A1.\nb,Q2?,\n")
    with pytest.raises(InvalidInputError, match=r"^faq\.csv:3: 'answer'"):
        ingest_folder(tmp_path)


def test_a_bad_out_of_scope_line_is_invalid_input(tmp_path: Path) -> None:
    _write(tmp_path, "out_of_scope.jsonl", _jsonl({"question": "ok?"}, {"text": "no question"}))
    with pytest.raises(InvalidInputError, match=r"out_of_scope\.jsonl:2"):
        ingest_folder(tmp_path)


def test_read_faq_uses_the_given_path_and_doc_id(tmp_path: Path) -> None:
    path = _write(tmp_path, "x.jsonl", _jsonl(GOOD))
    (faq,) = read_faq(path, "support/help.faq.jsonl", "help")
    assert faq.source == Source(
        doc_id="help", path="support/help.faq.jsonl", section="Q?", anchor="a"
    )


def test_read_faq_drops_repeated_paraphrases(tmp_path: Path) -> None:
    path = _write(tmp_path, "faq.jsonl", _jsonl({**GOOD, "paraphrases": ["p", " p ", "q", "p"]}))
    (faq,) = read_faq(path, "faq.jsonl", "faq")
    assert faq.paraphrases == ("p", "q")


def test_a_not_json_line_in_a_nested_faq_names_its_relative_path(tmp_path: Path) -> None:
    _write(tmp_path, "support/faq.jsonl", "{broken\n")
    with pytest.raises(InvalidInputError, match=r"^support/faq\.jsonl:1: "):
        ingest_folder(tmp_path)


def test_ids_that_differ_only_by_spaces_are_duplicates(tmp_path: Path) -> None:
    _write(tmp_path, "faq.jsonl", _jsonl(GOOD, {**GOOD, "id": "a "}))
    with pytest.raises(InvalidInputError, match="duplicate"):
        ingest_folder(tmp_path)


def test_regression_path_prefers_the_knowledge_folder(tmp_path: Path) -> None:
    root = tmp_path / "kb"
    root.mkdir()
    assert regression_path(root) is None
    beside = _write(tmp_path, "regression.jsonl", "")
    assert regression_path(root) == beside
    inside = _write(root, "regression.jsonl", "")
    assert regression_path(root) == inside


def test_ragcignore_keeps_listed_files_out_of_the_knowledge(tmp_path: Path) -> None:
    (tmp_path / ".ragcignore").write_text("# not knowledge\nREADME.md\ndrafts/\n*.tmp\n")
    (tmp_path / "README.md").write_text("# About this folder\n\nNot knowledge.\n")
    (tmp_path / "drafts").mkdir()
    (tmp_path / "drafts" / "idea.md").write_text("# Draft\n\nUnpublished.\n")
    (tmp_path / "scratch.tmp").write_text("scratch")
    (tmp_path / "policy.md").write_text("# Policy\n\nReal knowledge.\n")

    report = ingest_folder(tmp_path)

    assert [s.path for s in report.sources] == ["policy.md"]
    assert report.skipped == ()


@pytest.mark.parametrize(
    ("rel", "ignored"),
    [
        ("README.md", True),
        ("help/README.md", True),
        ("drafts/a.md", True),
        ("x/drafts/b.md", True),
        ("archive/old.md", True),
        ("policies/refunds.md", False),
        ("drafts.md", False),
    ],
)
def test_ignore_patterns_match_names_anywhere_and_paths_from_the_root(
    rel: str, ignored: bool
) -> None:
    assert is_ignored(rel, ("README.md", "drafts/", "archive/*.md")) is ignored
