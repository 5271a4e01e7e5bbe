"""A published version made ready to answer: snapshot indexed, router encoder, L3 composer.

Versions are immutable, so a loaded version is cached for the life of the process and shared
by every request (and by ``ragc ask``), keyed by store URL and version label. For the same
reason a version's routing of a question text never changes: the last ``route_cache`` distinct
texts keep their router verdict, so a repeated question skips the sentence encoder and the
router (most traffic is the same few hundred questions).
"""

from __future__ import annotations

import functools
import gc
import threading
from collections.abc import Callable, Mapping
from typing import Final

import numpy as np
import numpy.typing as npt

from providers.base import Provider
from providers.embedders import Embedder, embedder_for
from schemas.ladder import Answer, Composer, LoadedSnapshot, answer_question
from schemas.router import Prediction
from stores.base import SnapshotStore

__all__ = ["LoadedVersion", "VersionCache"]

MAX_VERSIONS: Final = 4
"""Versions held in memory at once (stable, canary, pinned ones)."""
ROUTE_CACHE: Final = 10_000
"""Distinct question texts whose router verdict a loaded version remembers."""


class LoadedVersion:
    """One version, ready to answer questions."""

    def __init__(
        self, loaded: LoadedSnapshot, embedder: Embedder | None, *, route_cache: int = ROUTE_CACHE
    ) -> None:
        self.loaded = loaded
        self.version = loaded.version
        self.embedder = embedder
        router = loaded.router
        self.route: Callable[[str], Prediction] | None = None
        if router is not None and (embedder is not None or not router.needs_embedding):
            self.route = (
                functools.lru_cache(maxsize=route_cache)(self._route)
                if route_cache > 0
                else self._route
            )

    def _route(self, question: str) -> Prediction:
        router = self.loaded.router
        assert router is not None  # checked in __init__
        return router.predict(question, self._embed(question) if router.needs_embedding else None)

    def _embed(self, question: str) -> npt.NDArray[np.float32]:
        assert self.embedder is not None
        vector: npt.NDArray[np.float32] = self.embedder.embed([question])[0]
        return vector

    def answer(
        self,
        question: str,
        *,
        tenant: str | None = None,
        language: str | None = None,
        slots: Mapping[str, object] | None = None,
        composer: Composer | Provider | None = None,
        allow_l3: bool = True,
    ) -> Answer:
        """Walk the ladder for one question on this version."""
        return answer_question(
            self.loaded,
            question,
            tenant=tenant,
            language=language,
            slots=slots,
            composer=composer,
            embed=self._embed if self.embedder is not None else None,
            allow_l3=allow_l3,
            route=self.route,
        )


class VersionCache:
    """Loaded versions by label (thread-safe, at most :data:`MAX_VERSIONS`)."""

    def __init__(
        self, store: SnapshotStore, *, size: int = MAX_VERSIONS, route_cache: int = ROUTE_CACHE
    ) -> None:
        self.store = store
        self.size = size
        self.route_cache = route_cache
        self._versions: dict[str, LoadedVersion] = {}
        self._encoders: dict[str, Embedder] = {}
        self._lock = threading.Lock()

    def __contains__(self, version: object) -> bool:
        with self._lock:
            return version in self._versions

    def get(self, version: str) -> LoadedVersion:
        """The loaded version, reading it from the store on first use."""
        with self._lock:
            found = self._versions.get(version)
        if found is not None:
            return found
        loaded = LoadedSnapshot(self.store.load(version))
        router = loaded.router
        embedder = None
        if router is not None and router.header.embedder is not None:
            model_id = router.header.embedder
            with self._lock:
                embedder = self._encoders.get(model_id)
            if embedder is None:
                embedder = embedder_for(model_id, serving=True)
        ready = LoadedVersion(loaded, embedder, route_cache=self.route_cache)
        gc.collect()  # a new version is long-lived: keep it out of later collections
        gc.freeze()
        with self._lock:
            if embedder is not None:
                self._encoders.setdefault(embedder.model_id, embedder)
            self._versions[version] = ready
            while len(self._versions) > self.size:
                self._versions.pop(next(iter(self._versions)))
        return ready
