"""The snapshot as a folder of files: the cold, shippable form of a version.

Layout: ``manifest.json``, one JSONL file per record family and ``blobs/<name>`` for binary
artifacts (router weights). The target is a local path or any fsspec URL (``file://``,
``memory://``, ``s3://``, ...):

* a local path is written under a temporary name and renamed into place, so a reader never
  sees half a snapshot;
* a URL (object storage has no rename) gets every file written in place, then ``SHA256SUMS``
  (the SHA-256 of every file), then ``manifest.json`` last. Readers require the manifest, so a
  write that did not finish is never taken as a snapshot, and may be replaced; a folder with a
  manifest is immutable.

Reading verifies ``SHA256SUMS`` when present (naming each damaged file), then counts and the
manifest checksum.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final, TypeVar, overload

import fsspec  # type: ignore[import-untyped]
import msgspec

from schemas.errors import CorruptSnapshotError, InvalidInputError
from schemas.keys import validate_version
from schemas.manifest import Manifest, Snapshot
from schemas.records import ExactAnswer, FallbackAnswer, IntentTemplate, TopicBlock

__all__ = ["archive_path", "archive_snapshot", "list_archived", "read_snapshot", "write_snapshot"]

_FAMILIES: Final = {
    "exact": ("exact.jsonl", ExactAnswer),
    "intents": ("intents.jsonl", IntentTemplate),
    "topics": ("topics.jsonl", TopicBlock),
    "fallbacks": ("fallbacks.jsonl", FallbackAnswer),
}
_MANIFEST: Final = "manifest.json"
_SUMS: Final = "SHA256SUMS"
_BLOB_NAME: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}\Z")
_SUM_LINE: Final = re.compile(r"^([0-9a-f]{64}) [ *](\S+)\Z")
_IMMUTABLE: Final = "snapshots are immutable: write to a new folder"
T = TypeVar("T")


def _is_url(target: str | os.PathLike[str]) -> bool:
    return isinstance(target, str) and "://" in target


def _open_fs(target: str | os.PathLike[str]) -> tuple[Any, str]:
    """The fsspec filesystem and the bare path of a local path or URL."""
    fs, path = fsspec.core.url_to_fs(os.fspath(target))
    return fs, str(path).rstrip("/") or str(path)


def _encode(snapshot: Snapshot) -> dict[str, bytes]:
    """Every file of the snapshot but the manifest, by path relative to the folder."""
    files = {
        filename: b"".join(msgspec.json.encode(r) + b"\n" for r in getattr(snapshot, family))
        for family, (filename, _) in _FAMILIES.items()
    }
    files.update({f"blobs/{name}": data for name, data in sorted(snapshot.blobs.items())})
    return files


def _manifest_bytes(snapshot: Snapshot) -> bytes:
    return msgspec.json.format(msgspec.json.encode(snapshot.manifest), indent=2)


def _sums(files: Mapping[str, bytes]) -> bytes:
    """``sha256sum``-style lines (``<hex>  <path>``), sorted by path."""
    lines = (f"{hashlib.sha256(files[rel]).hexdigest()}  {rel}\n" for rel in sorted(files))
    return "".join(lines).encode()


@overload
def write_snapshot(snapshot: Snapshot, target: os.PathLike[str]) -> Path: ...
@overload
def write_snapshot(snapshot: Snapshot, target: str) -> str: ...
def write_snapshot(snapshot: Snapshot, target: str | os.PathLike[str]) -> Path | str:
    """Write a sealed snapshot to ``target`` (a local path or fsspec URL); return where.

    A local folder must not exist yet. A URL must hold no ``manifest.json`` yet; a folder left
    there by a write that did not finish (snapshot files, no manifest) is replaced.
    """
    snapshot.verify()
    for name in snapshot.blobs:
        if not _BLOB_NAME.match(name):
            raise InvalidInputError(f"blob name {name!r} is not a safe file name")
    if _is_url(target):
        return _write_url(snapshot, str(target))
    folder = _write_local(snapshot, Path(target))
    return str(folder) if isinstance(target, str) else folder


def _write_local(snapshot: Snapshot, target: Path) -> Path:
    if target.exists():
        raise InvalidInputError(f"{target} already exists", hint=_IMMUTABLE)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        (staging / "blobs").mkdir()
        for rel, data in {**_encode(snapshot), _MANIFEST: _manifest_bytes(snapshot)}.items():
            (staging / rel).write_bytes(data)
        staging.replace(target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target


def _put(fs: Any, path: str, data: bytes) -> None:
    """Write one file (one PUT on object storage)."""
    fs.pipe_file(path, data)


def _write_url(snapshot: Snapshot, url: str) -> str:
    fs, root = _open_fs(url)
    manifest_path = f"{root}/{_MANIFEST}"
    if fs.exists(manifest_path):
        raise InvalidInputError(f"{url} already exists", hint=_IMMUTABLE)
    if fs.exists(root):
        _remove_partial(fs, root, url)
    files = _encode(snapshot)
    manifest = _manifest_bytes(snapshot)
    fs.makedirs(root, exist_ok=True)
    if snapshot.blobs:
        fs.makedirs(f"{root}/blobs", exist_ok=True)
    for rel, data in files.items():
        _put(fs, f"{root}/{rel}", data)
    _put(fs, f"{root}/{_SUMS}", _sums({**files, _MANIFEST: manifest}))
    if fs.exists(manifest_path):  # another writer finished first: theirs stands
        raise InvalidInputError(f"{url} was written concurrently", hint=_IMMUTABLE)
    _put(fs, manifest_path, manifest)
    return url


def _remove_partial(fs: Any, root: str, url: str) -> None:
    """Delete a folder a failed write left behind; refuse anything that is not one."""
    known = {filename for filename, _ in _FAMILIES.values()} | {_SUMS}
    for path in fs.find(root):
        rel = str(path)[len(root) + 1 :]
        blob = rel.startswith("blobs/") and _BLOB_NAME.match(rel.removeprefix("blobs/"))
        if rel not in known and not blob:
            raise InvalidInputError(
                f"{url} exists and is not a snapshot (it holds {rel or 'a file'!r})",
                hint="write the snapshot to a new, empty location",
            )
    fs.rm(root, recursive=True)


def _decode_jsonl(where: str, data: bytes, kind: type[T]) -> tuple[T, ...]:
    decoder = msgspec.json.Decoder(kind)
    records: list[T] = []
    for number, line in enumerate(data.splitlines(), 1):
        if not line.strip():
            continue
        try:
            records.append(decoder.decode(line))
        except msgspec.DecodeError as exc:
            raise CorruptSnapshotError(
                f"{where}:{number}: {exc}", hint="the snapshot file is damaged; compile again"
            ) from exc
    return tuple(records)


def _check_sums(name: str, sums: bytes, files: Mapping[str, bytes]) -> None:
    """Raise naming every file that is damaged, missing or unlisted against ``SHA256SUMS``."""
    expected: dict[str, str] = {}
    for number, line in enumerate(sums.decode("utf-8", "replace").splitlines(), 1):
        match = _SUM_LINE.match(line.strip())
        if match is None:
            if line.strip():
                raise CorruptSnapshotError(
                    f"{name}/{_SUMS}:{number}: not a '<sha256>  <file>' line"
                )
            continue
        expected[match[2]] = match[1]
    problems = [
        f"{rel} {'is missing' if rel not in files else 'is damaged'}"
        for rel, digest in sorted(expected.items())
        if rel not in files or hashlib.sha256(files[rel]).hexdigest() != digest
    ]
    problems += [f"{rel} is not listed" for rel in sorted(set(files) - set(expected))]
    if problems:
        raise CorruptSnapshotError(
            f"{name}: {'; '.join(problems)} (checksum mismatch against {_SUMS})",
            hint="the copy was damaged in storage or transit; copy it again or compile again",
        )


def read_snapshot(source: str | os.PathLike[str]) -> Snapshot:
    """Read and verify the snapshot at ``source`` (a local folder or fsspec URL)."""
    name = os.fspath(source).rstrip("/")
    fs, root = _open_fs(source)
    if not fs.isfile(f"{root}/{_MANIFEST}"):
        raise CorruptSnapshotError(
            f"{name} is not a snapshot: it has no {_MANIFEST}",
            hint="pass a folder written by `ragc compile` or `ragc export`; "
            "a write that did not finish leaves no manifest",
        )
    files: dict[str, bytes] = {_MANIFEST: fs.cat_file(f"{root}/{_MANIFEST}")}
    for filename, _ in _FAMILIES.values():
        if not fs.isfile(f"{root}/{filename}"):
            raise CorruptSnapshotError(f"{name} is missing {filename}")
        files[filename] = fs.cat_file(f"{root}/{filename}")
    if fs.isdir(f"{root}/blobs"):
        for entry in sorted(fs.ls(f"{root}/blobs", detail=True), key=lambda e: e["name"]):
            if entry["type"] == "file":
                blob = str(entry["name"]).rstrip("/").rsplit("/", 1)[-1]
                files[f"blobs/{blob}"] = fs.cat_file(entry["name"])
    if fs.isfile(f"{root}/{_SUMS}"):
        _check_sums(name, fs.cat_file(f"{root}/{_SUMS}"), files)
    try:
        manifest = msgspec.json.decode(files[_MANIFEST], type=Manifest)
    except msgspec.DecodeError as exc:
        raise CorruptSnapshotError(f"{name}/{_MANIFEST}: {exc}") from exc
    families: dict[str, tuple[object, ...]] = {}
    for family, (filename, kind) in _FAMILIES.items():
        families[family] = _decode_jsonl(f"{name}/{filename}", files[filename], kind)
    blobs = {rel[6:]: data for rel, data in files.items() if rel.startswith("blobs/")}
    snapshot = Snapshot(manifest=manifest, blobs=blobs, **families)  # type: ignore[arg-type]
    snapshot.verify()
    return snapshot


def archive_path(archive_url: str, version: str) -> str:
    """Where ``version`` lives in an archive: ``{archive}/{version}``."""
    base = archive_url.rstrip("/")
    base = archive_url if base.endswith(":") else f"{base}/"  # memory:// is a root
    return f"{base}{validate_version(version)}"


def archive_snapshot(snapshot: Snapshot, archive_url: str) -> str:
    """Write ``snapshot`` to :func:`archive_path`; return it. Writing the identical snapshot
    again is a no-op (a retried publish), a different one under the same version is refused."""
    target = archive_path(archive_url, snapshot.version)
    fs, root = _open_fs(target)
    if fs.isfile(f"{root}/{_MANIFEST}"):
        held = msgspec.json.decode(fs.cat_file(f"{root}/{_MANIFEST}"), type=Manifest)
        if held.checksum == snapshot.manifest.checksum:
            return target
        raise InvalidInputError(
            f"{target} already holds a different snapshot {snapshot.version}",
            hint="archived versions are immutable: compile under a new version label",
        )
    return write_snapshot(snapshot, target)


def list_archived(archive_url: str) -> list[str]:
    """Versions in an archive whose ``manifest.json`` exists (complete writes), oldest first."""
    fs, root = _open_fs(archive_url)
    if not fs.isdir(root):
        return []
    found = []
    for entry in fs.ls(root, detail=False):
        path = str(entry).rstrip("/")
        version = path.rsplit("/", 1)[-1]
        if not version.startswith(".") and fs.isfile(f"{path}/{_MANIFEST}"):
            found.append(version)
    return sorted(found, key=_natural)


def _natural(label: str) -> list[int | str]:
    """Sort key putting ``v2`` before ``v10``."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", label)]
