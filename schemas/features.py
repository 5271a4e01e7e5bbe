"""The router's n-gram features: hashed word 1-2-grams and in-word character 3-5-grams of the
canonical question, with sublinear term frequency (training adds IDF weights)."""

from __future__ import annotations

import zlib
from itertools import pairwise
from typing import Final

import numpy as np

from schemas.normalize import canonical_text

__all__ = ["HASH_BITS", "hashed_features"]

HASH_BITS: Final = 22
_MASK: Final = (1 << HASH_BITS) - 1


def _grams(text: str) -> list[str]:
    words = text.split()
    grams = [f"w:{w}" for w in words]
    grams += [f"b:{a} {b}" for a, b in pairwise(words)]
    for word in words:
        padded = f" {word} "
        for n in (3, 4, 5):
            grams += [f"c:{padded[i : i + n]}" for i in range(max(len(padded) - n + 1, 0))]
    return grams


def hashed_features(question: str) -> dict[int, float]:
    """Sublinear term frequencies of the question's hashed n-grams (not yet IDF-weighted)."""
    counts: dict[int, int] = {}
    for gram in _grams(canonical_text(question)):
        bucket = zlib.crc32(gram.encode("utf-8", "surrogatepass")) & _MASK
        counts[bucket] = counts.get(bucket, 0) + 1
    return {bucket: 1.0 + float(np.log(count)) for bucket, count in counts.items()}
