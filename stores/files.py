"""The snapshot as a folder of files: the cold, shippable form of a version.

Layout: ``manifest.json``, one JSONL file per record family and ``blobs/<name>`` for binary
artifacts (router weights). The folder is written under a temporary name and renamed into
place, so a reader never sees half a snapshot; reading verifies counts and checksums.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Final, TypeVar

import msgspec

from schemas.errors import CorruptSnapshotError, InvalidInputError
from schemas.manifest import Manifest, Snapshot
from schemas.records import ExactAnswer, FallbackAnswer, IntentTemplate, TopicBlock

__all__ = ["read_snapshot", "write_snapshot"]

_FAMILIES: Final = {
    "exact": ("exact.jsonl", ExactAnswer),
    "intents": ("intents.jsonl", IntentTemplate),
    "topics": ("topics.jsonl", TopicBlock),
    "fallbacks": ("fallbacks.jsonl", FallbackAnswer),
}
_BLOB_NAME: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
T = TypeVar("T")


def write_snapshot(snapshot: Snapshot, folder: str | os.PathLike[str]) -> Path:
    """Write a sealed snapshot to ``folder`` (which must not exist yet); return its path."""
    snapshot.verify()
    target = Path(folder)
    if target.exists():
        raise InvalidInputError(
            f"{target} already exists", hint="snapshots are immutable: write to a new folder"
        )
    for name in snapshot.blobs:
        if not _BLOB_NAME.match(name):
            raise InvalidInputError(f"blob name {name!r} is not a safe file name")
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        (staging / "manifest.json").write_bytes(
            msgspec.json.format(msgspec.json.encode(snapshot.manifest), indent=2)
        )
        for family, (filename, _) in _FAMILIES.items():
            records = getattr(snapshot, family)
            with (staging / filename).open("wb") as out:
                for record in records:
                    out.write(msgspec.json.encode(record) + b"\n")
        (staging / "blobs").mkdir()
        for name, data in snapshot.blobs.items():
            (staging / "blobs" / name).write_bytes(data)
        staging.replace(target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target


def _read_jsonl(path: Path, kind: type[T]) -> tuple[T, ...]:
    decoder = msgspec.json.Decoder(kind)
    records: list[T] = []
    with path.open("rb") as lines:
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                records.append(decoder.decode(line))
            except msgspec.DecodeError as exc:
                raise CorruptSnapshotError(
                    f"{path}:{number}: {exc}", hint="the snapshot file is damaged; compile again"
                ) from exc
    return tuple(records)


def read_snapshot(folder: str | os.PathLike[str]) -> Snapshot:
    """Read and verify the snapshot in ``folder``."""
    root = Path(folder)
    manifest_path = root / "manifest.json"
    if not manifest_path.is_file():
        raise CorruptSnapshotError(
            f"{root} is not a snapshot: it has no manifest.json",
            hint="pass a folder written by `ragc compile --out` or `ragc export`",
        )
    try:
        manifest = msgspec.json.decode(manifest_path.read_bytes(), type=Manifest)
    except msgspec.DecodeError as exc:
        raise CorruptSnapshotError(f"{manifest_path}: {exc}") from exc
    families: dict[str, tuple[object, ...]] = {}
    for family, (filename, kind) in _FAMILIES.items():
        path = root / filename
        if not path.is_file():
            raise CorruptSnapshotError(f"{root} is missing {filename}")
        families[family] = _read_jsonl(path, kind)
    blob_dir = root / "blobs"
    blobs = (
        {p.name: p.read_bytes() for p in sorted(blob_dir.iterdir()) if p.is_file()}
        if blob_dir.is_dir()
        else {}
    )
    snapshot = Snapshot(manifest=manifest, blobs=blobs, **families)  # type: ignore[arg-type]
    snapshot.verify()
    return snapshot
