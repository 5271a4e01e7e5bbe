"""Stage 3 — embed & index: chunk vectors in a temporary Qdrant collection (local mode).

Vectors are cached by ``(model id, text hash)`` in the build cache, so a recompile embeds only
new text. The collection lives in process memory for the length of one compile; nothing of it
reaches the snapshot or the service.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

import msgspec
import numpy as np
from qdrant_client import QdrantClient, models

from providers.embedders import Embedder
from schemas.arrays import Floats
from schemas.build import Chunk
from schemas.keys import content_hash
from stores.cache import BuildCache
from tasks._policies import stage_task

__all__ = ["ChunkIndex", "embed_cached", "embed_chunks", "index_chunks"]

COLLECTION: Final = "chunks"


def embed_cached(embedder: Embedder, texts: Sequence[str], cache: BuildCache | None) -> Floats:
    """Embed ``texts``, reusing cached vectors of the same model and text."""
    if not texts:
        return np.zeros((0, embedder.dim), dtype=np.float32)
    namespace = f"embedding:{embedder.model_id}"
    keys = [content_hash(t, 32) for t in texts]
    found = cache.get_many(namespace, keys) if cache else {}
    missing = sorted({k for k in keys if k not in found})
    if missing:
        first = {k: i for i, k in reversed(list(enumerate(keys)))}
        vectors = embedder.embed([texts[first[k]] for k in missing])
        fresh = {k: vectors[i].astype(np.float32).tobytes() for i, k in enumerate(missing)}
        if cache:
            cache.put_many(namespace, fresh)
        found = {**found, **fresh}
    return np.stack([np.frombuffer(found[k], dtype=np.float32) for k in keys])


class Hit(msgspec.Struct, frozen=True):
    chunk_id: str
    score: float


class ChunkIndex:
    """The build's temporary vector index over chunks."""

    def __init__(self, embedder: Embedder, chunks: Sequence[Chunk], vectors: Floats) -> None:
        self.embedder = embedder
        self.chunks = {c.id: c for c in chunks}
        self.vectors = {c.id: vectors[i] for i, c in enumerate(chunks)}
        self._client = QdrantClient(location=":memory:")
        self._client.create_collection(
            COLLECTION,
            vectors_config=models.VectorParams(size=embedder.dim, distance=models.Distance.COSINE),
        )
        if chunks:
            self._client.upsert(
                COLLECTION,
                points=[
                    models.PointStruct(
                        id=i,
                        vector=vectors[i].tolist(),
                        payload={"chunk_id": c.id, "doc_id": c.doc_id, "anchor": c.anchor},
                    )
                    for i, c in enumerate(chunks)
                ],
                wait=True,
            )

    def search(self, vector: Floats, k: int) -> list[Hit]:
        """The ``k`` chunks nearest to ``vector`` by cosine similarity."""
        if not self.chunks:
            return []
        found = self._client.query_points(
            COLLECTION, query=vector.tolist(), limit=k, with_payload=True
        ).points
        return [Hit(str(p.payload["chunk_id"]), float(p.score)) for p in found if p.payload]

    def close(self) -> None:
        self._client.close()


def embed_chunks(embedder: Embedder, chunks: Sequence[Chunk], cache: BuildCache | None) -> Floats:
    """Vectors of each chunk's heading path plus text."""
    return embed_cached(
        embedder, [f"{' > '.join(c.heading_path)}\n{c.text}" for c in chunks], cache
    )


@stage_task(retries=2)
def index_chunks(embedder: Embedder, chunks: list[Chunk], cache: BuildCache | None) -> ChunkIndex:
    """Embed every chunk and load it into a temporary Qdrant collection."""
    return ChunkIndex(embedder, chunks, embed_chunks(embedder, chunks, cache))
