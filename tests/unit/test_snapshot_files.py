"""The snapshot folder: written atomically, read back verified, damage named clearly."""

from __future__ import annotations

import re
from pathlib import Path

import msgspec
import pytest

from schemas.errors import CorruptSnapshotError, InvalidInputError
from schemas.records import Source
from stores import read_snapshot, write_snapshot
from tests.factories import make_snapshot


def test_a_written_snapshot_reads_back_equal(tmp_path: Path) -> None:
    snapshot = make_snapshot("v1", extra_exact=2)
    folder = write_snapshot(snapshot, tmp_path / "v1")

    assert read_snapshot(folder) == snapshot
    assert sorted(p.name for p in folder.iterdir()) == [
        "blobs",
        "exact.jsonl",
        "fallbacks.jsonl",
        "intents.jsonl",
        "manifest.json",
        "topics.jsonl",
    ]


def test_an_existing_folder_is_never_overwritten(tmp_path: Path) -> None:
    write_snapshot(make_snapshot("v1"), tmp_path / "v1")
    with pytest.raises(InvalidInputError, match="already exists"):
        write_snapshot(make_snapshot("v1", answer="other"), tmp_path / "v1")


def test_an_edited_record_fails_the_checksum(tmp_path: Path) -> None:
    folder = write_snapshot(make_snapshot("v1"), tmp_path / "v1")
    exact = folder / "exact.jsonl"
    exact.write_text(exact.read_text().replace("30 days", "90 days"))

    with pytest.raises(CorruptSnapshotError, match="checksum"):
        read_snapshot(folder)


def test_a_truncated_file_fails_the_counts(tmp_path: Path) -> None:
    folder = write_snapshot(make_snapshot("v1", extra_exact=2), tmp_path / "v1")
    exact = folder / "exact.jsonl"
    exact.write_text("".join(exact.read_text().splitlines(keepends=True)[:-1]))

    with pytest.raises(CorruptSnapshotError, match="counts"):
        read_snapshot(folder)


def test_a_broken_line_is_named_by_file_and_line(tmp_path: Path) -> None:
    folder = write_snapshot(make_snapshot("v1"), tmp_path / "v1")
    (folder / "topics.jsonl").write_text('{"topic": 5}\n')

    with pytest.raises(CorruptSnapshotError, match=r"topics\.jsonl:1"):
        read_snapshot(folder)


def test_a_folder_without_a_manifest_is_not_a_snapshot(tmp_path: Path) -> None:
    with pytest.raises(CorruptSnapshotError, match=r"no manifest\.json"):
        read_snapshot(tmp_path)


SEALED_BEFORE_ALTERNATES = "d2f63fb6a2493ce74c0b76387f65085839958908dc4e2648d79930392ec31e4c"
"""The checksum of ``make_snapshot("v1", extra_exact=2, tenant_answers={"acme": "x"})`` as
sealed before records had ``alternates``."""


def test_a_snapshot_sealed_before_alternates_existed_still_verifies(tmp_path: Path) -> None:
    snapshot = make_snapshot("v1", extra_exact=2, tenant_answers={"acme": "x"})
    assert snapshot.manifest.checksum == SEALED_BEFORE_ALTERNATES
    folder = write_snapshot(snapshot, tmp_path / "v1")
    for name in ("exact.jsonl", "intents.jsonl"):  # as an older ragc wrote them
        path = folder / name
        path.write_text(re.sub(r',?"alternates":\[\]', "", path.read_text()))
    manifest = folder / "manifest.json"
    manifest.write_text(re.sub(r',?"duplicates":\[\]', "", manifest.read_text()))
    assert "alternates" not in (folder / "exact.jsonl").read_text()

    assert read_snapshot(folder) == snapshot


def test_alternates_are_covered_by_the_checksum() -> None:
    snapshot = make_snapshot("v1")
    (intent,) = snapshot.intents
    other = Source(doc_id="returns", path="help/returns.md", section="Returns", anchor="returns")
    moved = msgspec.structs.replace(
        snapshot, intents=(msgspec.structs.replace(intent, alternates=(other,)),)
    )
    with pytest.raises(CorruptSnapshotError, match="checksum"):
        moved.verify()
    assert moved.sealed().manifest.checksum != snapshot.manifest.checksum
    moved.sealed().verify()
