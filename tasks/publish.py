"""Stage 10b — snapshot & publish, and the resources one compile opens and closes.

The sealed snapshot is written as a versioned folder (the cold, shippable form); with
``publish`` it is then loaded into the store and activated in one pointer flip. Any failure
before the flip leaves the active version serving.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import msgspec

from providers import make_provider
from providers.embedders import Embedder, default_embedder, router_embedder
from schemas.keys import validate_version
from schemas.manifest import Snapshot
from schemas.rollout import RolloutRecord
from stores import GcReport, open_store, write_snapshot
from stores.cache import BuildCache
from stores.files import archive_snapshot
from tasks._llm_cache import CachedProvider
from tasks._policies import stage_task
from tasks._warm import record_catalogue
from tasks.artifacts import SnapshotInputs, build_snapshot
from tasks.index import embed_cached
from tasks.router import RouterPolicy

__all__ = [
    "GcReport",
    "Resources",
    "compile_artifacts",
    "gc_store",
    "move_pointer",
    "open_resources",
    "publish_snapshot",
]


class Resources(msgspec.Struct, kw_only=True):
    """What one compile holds open: caches, models, the provider, and its version label."""

    cache: BuildCache
    embedder: Embedder
    """The sentence embedder (chunks, topics, questions)."""
    router_embedder: Embedder
    """The encoder the L2 router reads (:func:`providers.embedders.router_embedder`)."""
    provider: CachedProvider
    store_url: str
    version: str
    parent: str | None


@contextmanager
def open_resources(
    *, build_dir: str, store_url: str, provider: str, model: str | None, version: str | None
) -> Iterator[Resources]:
    """Open the build cache, embedder, provider and store pointer for one compile."""
    cache = BuildCache(Path(build_dir) / "cache.db")
    llm = make_provider(provider, model=model)
    store = open_store(store_url)
    try:
        label = validate_version(version) if version else store.next_version()
        parent = store.active_version()
    finally:
        store.close()
    embedder = default_embedder()
    try:
        yield Resources(
            cache=cache,
            embedder=embedder,
            router_embedder=router_embedder(embedder),
            provider=CachedProvider(llm, cache),
            store_url=store_url,
            version=label,
            parent=parent,
        )
    finally:
        close = getattr(llm, "close", None)
        if callable(close):
            close()
        cache.close()


@stage_task(retries=0)
def compile_artifacts(
    inputs: SnapshotInputs,
    embedder: Embedder,
    cache: BuildCache | None,
    policy: RouterPolicy | None = None,
) -> Snapshot:
    """Prefect task over :func:`tasks.artifacts.build_snapshot`; the router reads the vectors of
    ``embedder`` (a compile passes :attr:`Resources.router_embedder`)."""
    return build_snapshot(
        inputs,
        encoder=lambda questions: embed_cached(embedder, questions, cache),
        encoder_id=embedder.model_id,
        cache=cache,
        policy=policy,
    )


@stage_task(retries=2)
def publish_snapshot(
    snapshot: Snapshot, folder: Path, store_url: str, publish: bool, archive_url: str | None = None
) -> bool:
    """Write the snapshot folder; with ``publish`` copy it to the archive (when given: the cold
    tier, ``{archive_url}/{version}``), then load it into the store and activate it."""
    if folder.exists():
        shutil.rmtree(folder)  # an unpublished build of the same label, superseded
    write_snapshot(snapshot, folder)
    if not publish:
        return False
    if archive_url:
        archive_snapshot(snapshot, archive_url)  # idempotent, so a retried publish passes
    store = open_store(store_url)
    try:
        store.publish(snapshot, activate=True)
    finally:
        store.close()
    record_catalogue(snapshot, store_url)
    return True


@stage_task(retries=2)
def gc_store(store_url: str, keep: int) -> GcReport:
    """Delete old versions and dead partial loads."""
    store = open_store(store_url)
    try:
        return store.gc(keep)
    finally:
        store.close()


@stage_task(retries=2)
def move_pointer(store_url: str, version: str | None, percent: float) -> RolloutRecord:
    """Roll ``version`` out to ``percent`` %, or roll back when ``version`` is None."""
    store = open_store(store_url)
    try:
        return store.rollback() if version is None else store.rollout(version, percent)
    finally:
        store.close()
