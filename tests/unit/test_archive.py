"""The cold tier: snapshots as versioned folders at a local path or any fsspec URL."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import fsspec  # type: ignore[import-untyped]
import pytest
from typer.testing import CliRunner

import stores.files
from ragc.cli import app
from schemas.errors import CorruptSnapshotError, InvalidInputError
from stores import open_store
from stores.files import (
    archive_path,
    archive_snapshot,
    list_archived,
    read_snapshot,
    write_snapshot,
)
from tests.factories import make_snapshot

runner = CliRunner()


@pytest.fixture
def mem() -> Iterator[str]:
    """A fresh ``memory://`` folder, removed afterwards (the memory filesystem is global)."""
    root = f"memory://ragc-test-{uuid.uuid4().hex}"
    yield root
    fs = fsspec.filesystem("memory")
    if fs.exists(root):
        fs.rm(root, recursive=True)


@pytest.fixture(params=["memory", "file"])
def url(request: pytest.FixtureRequest, mem: str, tmp_path: Path) -> str:
    """A folder URL on the in-memory filesystem and on the local one (``file://``)."""
    return f"{mem}/v1" if request.param == "memory" else f"file://{tmp_path}/archive/v1"


def _names(target: str) -> list[str]:
    fs, root = fsspec.core.url_to_fs(target)
    return sorted(str(p)[len(root.rstrip("/")) + 1 :] for p in fs.find(root))


def _edit(target: str, rel: str, old: bytes, new: bytes) -> None:
    fs, root = fsspec.core.url_to_fs(target)
    path = f"{root.rstrip('/')}/{rel}"
    data = fs.cat_file(path)
    assert old in data
    fs.pipe_file(path, data.replace(old, new))


def test_a_snapshot_round_trips_through_a_url(url: str) -> None:
    snapshot = make_snapshot("v1", extra_exact=2)

    assert write_snapshot(snapshot, url) == url
    assert read_snapshot(url) == snapshot
    assert _names(url) == [
        "SHA256SUMS",
        "blobs/router.json",
        "exact.jsonl",
        "fallbacks.jsonl",
        "intents.jsonl",
        "manifest.json",
        "topics.jsonl",
    ]
    sums = fsspec.open(f"{url}/SHA256SUMS", "rb").open().read().decode()
    assert [line.split("  ")[1] for line in sums.splitlines()] == _names(url)[1:]


def test_a_snapshot_round_trips_through_a_local_path_given_as_text(tmp_path: Path) -> None:
    snapshot = make_snapshot("v1")
    target = str(tmp_path / "v1")

    assert write_snapshot(snapshot, target) == target
    assert read_snapshot(target) == snapshot
    assert read_snapshot(f"file://{target}") == snapshot


def test_the_manifest_is_written_last(url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    written: list[str] = []
    put = stores.files._put

    def recording(fs: Any, path: str, data: bytes) -> None:
        written.append(path.rsplit("/", 1)[-1])
        put(fs, path, data)

    monkeypatch.setattr(stores.files, "_put", recording)
    write_snapshot(make_snapshot("v1"), url)

    assert written[-2:] == ["SHA256SUMS", "manifest.json"]
    assert set(written[:-2]) == {
        "exact.jsonl",
        "intents.jsonl",
        "topics.jsonl",
        "fallbacks.jsonl",
        "router.json",
    }


def test_a_crashed_write_is_not_a_snapshot_and_may_be_written_again(
    url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    put = stores.files._put

    def crashing(fs: Any, path: str, data: bytes) -> None:
        if path.endswith("SHA256SUMS"):  # every JSONL file and blob is already written
            raise OSError("connection lost")
        put(fs, path, data)

    monkeypatch.setattr(stores.files, "_put", crashing)
    with pytest.raises(OSError, match="connection lost"):
        write_snapshot(make_snapshot("v1"), url)
    monkeypatch.undo()

    assert "exact.jsonl" in _names(url)
    assert "manifest.json" not in _names(url)
    with pytest.raises(CorruptSnapshotError, match=r"is not a snapshot: it has no manifest\.json"):
        read_snapshot(url)
    assert list_archived(url.rsplit("/", 1)[0]) == []

    snapshot = make_snapshot("v1", answer="Within 30 days, always.")
    write_snapshot(snapshot, url)  # the partial folder is replaced
    assert read_snapshot(url) == snapshot

    with pytest.raises(InvalidInputError, match=r"already exists.*immutable"):
        write_snapshot(make_snapshot("v1", answer="other"), url)
    assert read_snapshot(url) == snapshot


def test_a_folder_that_is_not_a_partial_snapshot_is_never_replaced(mem: str) -> None:
    target = f"{mem}/v1"
    with fsspec.open(f"{target}/notes.txt", "wb") as out:
        out.write(b"mine")

    with pytest.raises(InvalidInputError, match=r"not a snapshot \(it holds 'notes\.txt'\)"):
        write_snapshot(make_snapshot("v1"), target)
    assert _names(target) == ["notes.txt"]


@pytest.mark.parametrize(
    ("rel", "old", "new", "named"),
    [
        ("exact.jsonl", b"30 days", b"90 days", "exact.jsonl is damaged"),
        ("blobs/router.json", b"[]", b"[1]", r"blobs/router\.json is damaged"),
        # same records, other bytes: invisible to the manifest checksum, not to SHA256SUMS
        ("topics.jsonl", b"\n", b"\n\n", r"topics\.jsonl is damaged"),
    ],
)
def test_a_sha256sums_mismatch_names_the_file(
    mem: str, rel: str, old: bytes, new: bytes, named: str
) -> None:
    target = f"{mem}/v1"
    write_snapshot(make_snapshot("v1"), target)
    _edit(target, rel, old, new)

    with pytest.raises(CorruptSnapshotError, match=f"{named}.*checksum mismatch"):
        read_snapshot(target)


def test_missing_and_unlisted_files_are_named(mem: str) -> None:
    target = f"{mem}/v1"
    write_snapshot(make_snapshot("v1"), target)
    fs = fsspec.filesystem("memory")
    fs.rm(f"{target}/blobs/router.json")
    fs.pipe_file(f"{target}/blobs/extra.bin", b"x")

    with pytest.raises(CorruptSnapshotError) as caught:
        read_snapshot(target)
    assert "blobs/router.json is missing" in str(caught.value)
    assert "blobs/extra.bin is not listed" in str(caught.value)


def test_archive_paths_and_listing(mem: str, tmp_path: Path) -> None:
    assert archive_path("s3://bucket/archive/", "v3") == "s3://bucket/archive/v3"
    assert archive_path("memory://", "v3") == "memory://v3"
    with pytest.raises(InvalidInputError, match="version label"):
        archive_path(mem, "../v3")

    assert list_archived(mem) == []
    for version in ("v10", "v2", "v1"):
        write_snapshot(make_snapshot(version), archive_path(mem, version))
    with fsspec.open(f"{archive_path(mem, 'v11')}/exact.jsonl", "wb") as out:
        out.write(b"")  # a write that never finished
    assert list_archived(mem) == ["v1", "v2", "v10"]

    local = str(tmp_path / "archive")
    write_snapshot(make_snapshot("v1"), archive_path(local, "v1"))
    (tmp_path / "archive" / "v2").mkdir()
    assert list_archived(local) == ["v1"]


def test_archiving_is_idempotent_for_the_same_snapshot_only(mem: str) -> None:
    snapshot = make_snapshot("v1")
    assert archive_snapshot(snapshot, mem) == f"{mem}/v1"
    assert archive_snapshot(snapshot, mem) == f"{mem}/v1"  # a retried publish
    with pytest.raises(InvalidInputError, match="already holds a different snapshot v1"):
        archive_snapshot(make_snapshot("v1", answer="other"), mem)
    assert read_snapshot(f"{mem}/v1") == snapshot


def test_ragc_publish_from_a_url(mem: str, tmp_path: Path) -> None:
    store = f"sqlite:///{tmp_path / 'knowledge.db'}"
    write_snapshot(make_snapshot("v3"), archive_path(mem, "v3"))

    result = runner.invoke(app, ["publish", "--from", f"{mem}/v3", "--activate", "--store", store])
    assert result.exit_code == 0, result.stderr
    assert result.stdout.strip() == "published v3 (active)"

    result = runner.invoke(app, ["versions", "--store", store, "--json"])
    listed = {v["version"]: v for v in json.loads(result.stdout)}
    assert listed["v3"]["active"]


def test_ragc_publish_wants_exactly_one_source(mem: str, tmp_path: Path) -> None:
    store = f"sqlite:///{tmp_path / 'knowledge.db'}"
    folder = write_snapshot(make_snapshot("v1"), tmp_path / "v1")

    for args in ([], [str(folder), "--from", f"{mem}/v1"]):
        result = runner.invoke(app, ["publish", *args, "--store", store])
        assert result.exit_code == 2
        assert "give a SNAPSHOT folder or --from URL" in result.stderr

    result = runner.invoke(app, ["publish", "--from", f"{mem}/v1", "--store", store])
    assert result.exit_code == 1
    assert "no manifest.json" in result.stderr
    assert runner.invoke(app, ["publish", "--from", str(folder), "--store", store]).exit_code == 0


def test_publish_snapshot_archives_what_it_publishes(mem: str, tmp_path: Path) -> None:
    from tasks.publish import publish_snapshot  # noqa: PLC0415 - loads Prefect

    store = f"sqlite:///{tmp_path / 'knowledge.db'}"
    build = tmp_path / "build"
    snapshot = make_snapshot("v1")

    assert not publish_snapshot.fn(snapshot, build / "v1", store, False, archive_url=mem)
    assert list_archived(mem) == []  # an unpublished build keeps no archived version

    assert publish_snapshot.fn(snapshot, build / "v1", store, True, archive_url=mem)
    assert list_archived(mem) == ["v1"]
    assert read_snapshot(archive_path(mem, "v1")) == snapshot
    opened = open_store(store)
    try:
        assert opened.active_version() == "v1"
    finally:
        opened.close()


def test_compile_takes_the_archive_from_the_option_or_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import flows.compile  # noqa: PLC0415 - loads Prefect

    seen: list[str | None] = []

    def fake_compile(params: flows.compile.CompileParams) -> dict[str, str]:
        seen.append(params.archive)
        return {}

    monkeypatch.setattr(flows.compile, "compile_knowledge", fake_compile)
    monkeypatch.delenv("RAGC_ARCHIVE_URL", raising=False)
    args = ["compile", str(tmp_path), "--json", "--store", f"sqlite:///{tmp_path / 'k.db'}"]

    assert runner.invoke(app, args).exit_code == 0
    assert runner.invoke(app, [*args, "--archive", "s3://b/archive"]).exit_code == 0
    assert runner.invoke(app, args, env={"RAGC_ARCHIVE_URL": "memory://a"}).exit_code == 0
    assert seen == [None, "s3://b/archive", "memory://a"]

    monkeypatch.setenv("RAGC_ARCHIVE_URL", "file:///srv/archive")
    assert flows.compile.CompileParams(knowledge="k").archive == "file:///srv/archive"
