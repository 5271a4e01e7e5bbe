"""A published version made ready to answer: snapshot indexed, router encoder, L3 composer.

Versions are immutable, so a loaded version is cached for the life of the process and shared
by every request (and by ``ragc ask``), keyed by store URL and version label. For the same
reason a version's routing of a question text never changes: the last ``route_cache`` distinct
texts keep their router verdict (a :class:`RouteMemo`), so a repeated question skips the
sentence encoder and the router (most traffic is the same few hundred questions).

:meth:`LoadedVersion.answer_cached` walks the ladder as far as it can without the encoder: it
answers L1 hits, memoised questions and routers that read no vector, and returns ``None`` for a
question that needs its vector, which the service then has embedded in a batch (see
``serving/batching.py``) and hands to :meth:`LoadedVersion.answer`.
"""

from __future__ import annotations

import ctypes
import gc
import threading
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from functools import partial
from typing import Final, TypedDict, Unpack

from providers.base import Provider
from providers.embedders import Embedder, embedder_for
from schemas.arrays import Floats
from schemas.ladder import Answer, Composer, LoadedSnapshot, Route, answer_question
from schemas.router import Prediction
from stores.base import SnapshotStore

__all__ = ["AskOptions", "LoadedVersion", "RouteMemo", "VersionCache"]

ROUTE_CACHE: Final = 10_000
"""Distinct question texts whose router verdict a loaded version remembers."""


class RouteMemo:
    """The router's verdicts for the last ``size`` distinct question texts (thread-safe LRU).

    Keyed by the question text as asked (the router reads the raw text), holding plain
    :class:`~schemas.router.Prediction` records: nothing in it refers back to the version, so an
    evicted version is freed with its memo. ``size`` 0 remembers nothing.
    """

    def __init__(self, size: int) -> None:
        self.size = size
        self._entries: OrderedDict[str, Prediction] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, question: str) -> Prediction | None:
        """The remembered verdict (now the most recently used), or ``None``."""
        if not self.size:
            return None
        with self._lock:
            found = self._entries.get(question)
            if found is not None:
                self._entries.move_to_end(question)
            return found

    def put(self, question: str, prediction: Prediction) -> None:
        """Remember ``prediction``, forgetting the least recently used text past ``size``."""
        if not self.size:
            return
        with self._lock:
            self._entries[question] = prediction
            self._entries.move_to_end(question)
            if len(self._entries) > self.size:
                self._entries.popitem(last=False)


class AskOptions(TypedDict, total=False):
    """How one question walks the ladder, beside the question itself."""

    tenant: str | None
    language: str | None
    slots: Mapping[str, object] | None
    composer: Composer | Provider | None
    allow_l3: bool


class _NeedsVector(Exception):  # noqa: N818 - a signal inside answer_cached, never raised out
    """The question's route is not memoised and the router reads its vector."""


class LoadedVersion:
    """One version, ready to answer questions."""

    def __init__(
        self, loaded: LoadedSnapshot, embedder: Embedder | None, *, route_cache: int = ROUTE_CACHE
    ) -> None:
        self.loaded = loaded
        self.version = loaded.version
        self.embedder = embedder
        self.memo = RouteMemo(route_cache)
        router = loaded.router
        self.can_route = router is not None and (embedder is not None or not router.needs_embedding)
        """The router runs on this machine (it has a router, and the encoder if it needs one)."""
        self.encodes = self.can_route and router is not None and router.needs_embedding
        """Routing a question it has not memoised needs the question's vector."""

    def embed(self, question: str) -> Floats:
        """``question``'s router vector, from the encoder inline (one text per call)."""
        assert self.embedder is not None  # only called when self.encodes
        vector: Floats = self.embedder.embed([question])[0]
        return vector

    def route(self, question: str, vector: Floats | None = None) -> Prediction:
        """The router's verdict: memoised, else from ``vector`` (embedded here when not given)."""
        found = self.memo.get(question)
        if found is not None:
            return found
        router = self.loaded.router
        assert router is not None  # the ladder routes only when self.can_route
        if not router.needs_embedding:
            vector = None
        elif vector is None:
            vector = self.embed(question)
        prediction = router.predict(question, vector)
        self.memo.put(question, prediction)
        return prediction

    def _memoised(self, question: str) -> Prediction:
        found = self.memo.get(question)
        if found is None:
            raise _NeedsVector
        return found

    def answer(
        self,
        question: str,
        *,
        vector: Floats | None = None,
        route: Route | None = None,
        **ask: Unpack[AskOptions],
    ) -> Answer:
        """Walk the ladder for one question on this version (``vector``: its router vector,
        already embedded; without it the encoder runs inline when the router needs it;
        ``route`` replaces the router call altogether)."""
        if route is None and self.can_route:
            route = self.route if vector is None else partial(self.route, vector=vector)
        return answer_question(self.loaded, question, route=route, **ask)

    def answer_cached(self, question: str, **ask: Unpack[AskOptions]) -> Answer | None:
        """:meth:`answer` without the encoder: ``None`` when the question reaches the router,
        which has not memoised it and needs its vector (then embed it and call :meth:`answer`).

        L1 hits and memoised questions cost what :meth:`answer` costs; a question that needs
        its vector costs one normalisation and one L1 lookup here before it is embedded.
        """
        if not self.encodes:
            return self.answer(question, **ask)
        try:
            return self.answer(question, route=self._memoised, **ask)
        except _NeedsVector:
            return None


def _give_back_memory() -> None:
    """After a version is released: collect it (its records hold cycles) and hand the freed
    heap back to the system (glibc keeps it otherwise, and a replica's RSS would climb by the
    high-water mark of each flip, when two versions are briefly loaded)."""
    gc.collect()
    trim = getattr(_LIBC, "malloc_trim", None)
    if trim is not None:
        trim(0)


_LIBC: Final = ctypes.CDLL(None)
"""The C library this process already runs on (``malloc_trim`` is glibc's; elsewhere none)."""


class VersionCache:
    """Loaded versions by label (thread-safe).

    It holds every version the pointers name (:meth:`retain`: stable, canary, every pinned
    version), however many, and no other. So its memory follows what the pointers use: a
    replica that flips all day holds one version, not one per flip (a rollback reloads the
    version it returns to, in the pointer thread, while requests go on being answered by the
    version they were routed to).
    """

    def __init__(self, store: SnapshotStore, *, route_cache: int = ROUTE_CACHE) -> None:
        self.store = store
        self.route_cache = route_cache
        self._versions: dict[str, LoadedVersion] = {}
        self._retained: frozenset[str] = frozenset()
        self._lock = threading.Lock()

    @property
    def retained(self) -> frozenset[str]:
        """The versions :meth:`retain` was last given."""
        return self._retained

    def retain(self, versions: Iterable[str]) -> None:
        """Keep ``versions`` (the ones in use) loaded from now on; release the ones before."""
        with self._lock:
            self._retained = frozenset(versions)
            released = self._evict()
        if released:
            _give_back_memory()

    def _evict(self) -> int:
        """Drop every version not retained; how many were dropped. Call with the lock held."""
        dropped = [label for label in self._versions if label not in self._retained]
        for label in dropped:
            del self._versions[label]
        return len(dropped)

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
        embedder = None  # versions of one encoder share it: embedder_for keeps one per process
        if router is not None and router.header.embedder is not None:
            embedder = embedder_for(router.header.embedder, serving=True)
        ready = LoadedVersion(loaded, embedder, route_cache=self.route_cache)
        gc.collect()  # a new version is long-lived: keep it out of later collections
        gc.freeze()
        with self._lock:  # one asked for outside the pointers stays until the next retain
            self._versions[version] = ready
        return ready
