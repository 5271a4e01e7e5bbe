"""Helpers the local encoders share: pooling, normalisation and pinned-file checks."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from schemas.errors import PermanentError

__all__ = ["INSTALL_HINT", "Matrix", "l2_normalise", "mean_pool", "sha256_file", "verified"]

Matrix = npt.NDArray[np.float32]

INSTALL_HINT = "reinstall the project's dependencies (`uv sync`)"


def l2_normalise(matrix: Matrix) -> Matrix:
    """Rows scaled to unit length (a zero row stays zero)."""
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    normalised: Matrix = (matrix / np.maximum(norms, 1e-12)).astype(np.float32, copy=False)
    return normalised


def mean_pool(hidden: Any, mask: npt.NDArray[np.int64]) -> Matrix:
    """Token states ``(n, length, dim)`` averaged over each row's real tokens."""
    weights = mask.astype(np.float32)
    summed = np.einsum("nld,nl->nd", np.asarray(hidden, dtype=np.float32), weights)
    pooled: Matrix = (summed / np.maximum(weights.sum(axis=1, keepdims=True), 1e-9)).astype(
        np.float32
    )
    return pooled


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
