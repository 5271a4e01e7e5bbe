"""Stage 4 — topic discovery: cluster chunks by meaning and name each cluster.

Agglomerative clustering (average linkage, cosine distance) groups chunk vectors without a
fixed number of topics; each topic is named by its most distinctive words (class-based TF-IDF
over the topic's text against the others), and its id is a slug of that name.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from typing import Final

import numpy as np

from providers._text import content_words
from schemas.build import Chunk, Topic
from schemas.keys import make_name, unique_name
from tasks._policies import stage_task
from tasks.index import ChunkIndex

__all__ = ["DISTANCE", "discover_topics", "find_topics", "name_topics"]

DISTANCE: Final = 0.65
"""Cosine distance under which clusters merge (lower gives more, finer topics)."""
_NAME_WORDS: Final = 3


def name_topics(groups: Sequence[Sequence[Chunk]]) -> list[str]:
    """A name for each group of chunks: its most distinctive words by class-based TF-IDF."""
    counts = [
        Counter(w for c in group for w in content_words(f"{c.section} {c.text}"))
        for group in groups
    ]
    containing = Counter(w for count in counts for w in count)
    names = []
    for count in counts:
        total = sum(count.values()) or 1
        scored = sorted(
            count,
            key=lambda w: (-(count[w] / total) * math.log(1 + len(groups) / containing[w]), w),
        )
        words = [w for w in scored if not w.isdigit()][:_NAME_WORDS]
        names.append(" ".join(words) or "general")
    return names


def find_topics(
    chunks: Sequence[Chunk], index: ChunkIndex, *, distance: float = DISTANCE
) -> list[Topic]:
    """Cluster ``chunks`` (in their order) into named topics with unique, stable ids."""
    if not chunks:
        return []
    if len(chunks) == 1:
        labels = np.zeros(1, dtype=int)
    else:
        vectors = np.stack([index.vectors[c.id] for c in chunks])
        from sklearn.cluster import AgglomerativeClustering  # noqa: PLC0415 - heavy import

        labels = AgglomerativeClustering(
            n_clusters=None, metric="cosine", linkage="average", distance_threshold=distance
        ).fit_predict(vectors)
    order: dict[int, list[Chunk]] = {}
    for chunk, label in zip(chunks, labels, strict=True):
        order.setdefault(int(label), []).append(chunk)
    groups = list(order.values())  # in order of first appearance: stable across runs
    topics: list[Topic] = []
    used: set[str] = set()
    for group, name in zip(groups, name_topics(groups), strict=True):
        ident = unique_name(make_name("-".join(name.split()) or "general"), used)
        topics.append(Topic(id=ident, name=name, chunk_ids=tuple(c.id for c in group)))
    return topics


@stage_task(retries=0)
def discover_topics(chunks: list[Chunk], index: ChunkIndex) -> list[Topic]:
    """Prefect task over :func:`find_topics`."""
    return find_topics(chunks, index)
