"""The one name for float32 arrays: a sentence vector, or rows of them."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

__all__ = ["Floats"]

Floats = npt.NDArray[np.float32]
"""float32 values: one vector (shape ``(dim,)``) or one row per text (``(n, dim)``)."""
