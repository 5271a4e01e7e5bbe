"""Helpers the local encoders share: pooling, normalisation and pinned-file checks."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from schemas.arrays import Floats
from schemas.errors import PermanentError

__all__ = [
    "INSTALL_HINT",
    "Floats",
    "embed_by_length",
    "l2_normalise",
    "mean_pool",
    "padded",
    "pooled_blocks",
    "sha256_file",
    "verified",
]


INSTALL_HINT = "reinstall the project's dependencies (`uv sync`)"


def l2_normalise(matrix: Floats) -> Floats:
    """Rows scaled to unit length (a zero row stays zero)."""
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    normalised: Floats = (matrix / np.maximum(norms, 1e-12)).astype(np.float32, copy=False)
    return normalised


def mean_pool(hidden: Any, mask: npt.NDArray[np.int64]) -> Floats:
    """Token states ``(n, length, dim)`` averaged over each row's real tokens."""
    weights = mask.astype(np.float32)
    summed = np.einsum("nld,nl->nd", np.asarray(hidden, dtype=np.float32), weights)
    pooled: Floats = (summed / np.maximum(weights.sum(axis=1, keepdims=True), 1e-9)).astype(
        np.float32
    )
    return pooled


def embed_by_length(
    ids: list[list[int]], dim: int, batch_size: int, run: Callable[[list[list[int]]], Floats]
) -> Floats:
    """Token id rows embedded by ``run`` in batches of ``batch_size``, sorted by length so
    that each batch is padded only to its own longest row; rows in the input's order."""
    result = np.zeros((len(ids), dim), dtype=np.float32)
    order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
    for start in range(0, len(order), batch_size):
        rows = order[start : start + batch_size]
        result[rows] = run([ids[i] for i in rows])
    return result


def padded(
    batch: list[list[int]], pad_id: int
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """A batch of token id rows as ``(input_ids, attention_mask)``, padded with ``pad_id``."""
    width = max(len(row) for row in batch)
    input_ids = np.full((len(batch), width), pad_id, dtype=np.int64)
    mask = np.zeros((len(batch), width), dtype=np.int64)
    for i, row in enumerate(batch):
        input_ids[i, : len(row)] = row
        mask[i, : len(row)] = 1
    return input_ids, mask


def pooled_blocks(states: Sequence[Any], mask: npt.NDArray[np.int64]) -> Floats:
    """Each output's token states mean-pooled and normalised; several outputs (layers) are
    concatenated and scaled to unit length."""
    blocks = [l2_normalise(mean_pool(hidden, mask)) for hidden in states]
    return blocks[0] if len(blocks) == 1 else l2_normalise(np.concatenate(blocks, axis=1))


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def verified(path: Path, expected: str, what: str, *, hint: str = INSTALL_HINT) -> Path:
    """``path`` if it is a file with the ``expected`` sha256, else a PermanentError."""
    if not path.is_file():
        raise PermanentError(f"{what} not found at {path}", hint=hint)
    actual = sha256_file(path)
    if actual != expected:
        raise PermanentError(
            f"{what} at {path} has sha256 {actual}, expected {expected}",
            hint=f"the file is corrupt or a different version; {hint}",
        )
    return path
