"""The answer service: pick the version, walk the ladder, count, audit — for HTTP and CLI alike.

:meth:`AnswerService.answer` is the synchronous ladder (``ragc ask``, the batch route): the
sentence encoder runs inline. :meth:`AnswerService.answer_async` is the HTTP one: a question
that needs its vector awaits the process's :class:`~serving.batching.EncoderBatcher`, so
concurrent requests share encoder calls; L1 hits and memoised routes are answered on the spot,
exactly as by :meth:`AnswerService.answer`. With a composer that does I/O (``anthropic``) the
ladder runs in a worker thread, which blocks on the same batcher for the vector.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from typing import TypedDict, Unpack

import anyio.to_thread
import msgspec

from providers import make_provider
from providers.base import Provider
from schemas.arrays import Floats
from schemas.keys import validate_tenant
from schemas.ladder import Answer
from schemas.rollout import PointerState, RolloutRecord, VersionInfo, choose_version
from serving.audit import AuditWriter
from serving.batching import EncoderBatcher
from serving.budget import LLMBudget
from serving.errors import NotReadyError
from serving.metrics import Metrics
from serving.pointer import PointerWatcher
from serving.runtime import AskOptions, LoadedVersion, VersionCache
from serving.settings import ServeSettings
from serving.tenants import TenantAuth
from stores.audit import AuditEvent, AuditLog, MissSummary
from stores.base import PARTIAL_GRACE_S, GcReport, SnapshotStore
from stores.tenant_keys import IssuedKey, TenantKey, TenantKeys
from stores.warm import WarmTier

__all__ = ["AnswerService", "Asked"]


class Asked(TypedDict, total=False):
    """Who asks, and how: every keyword of :meth:`AnswerService.answer` beside the question."""

    tenant: str | None
    language: str | None
    slots: Mapping[str, object] | None
    session: str | None
    """Sticky canary assignment: the same session lands on the same version."""


class AnswerService:
    """Everything a request needs, built once per process."""

    def __init__(
        self,
        settings: ServeSettings,
        store: SnapshotStore,
        *,
        provider: Provider | None = None,
        audit_log: AuditLog | None = None,
        tenant_keys: TenantKeys | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.versions = VersionCache(store, route_cache=settings.route_cache)
        self.metrics = Metrics()
        # Reading the pointers loads the versions they name (now, and after every flip).
        self.pointers = PointerWatcher(
            store,
            interval=settings.pointer_poll_s,
            on_change=self._load_versions,
            on_switch=self._switched,
            on_health=self.metrics.set_degraded,
        )
        self.composer: Provider = provider or make_provider(settings.provider)
        self.audit_log = audit_log
        self.audit = (
            AuditWriter(audit_log, on_drop=self.metrics.count_audit_dropped)
            if audit_log is not None
            else None
        )
        self.budget = LLMBudget(
            settings.l3_budget, audit_log.l3_spent() if audit_log is not None else None
        )
        self.tenant_keys = tenant_keys
        self.tenants = TenantAuth(settings.tenant_auth, tenant_keys)
        """Resolves a request's tenant from its API key (the HTTP edge asks it)."""
        self.batchers: dict[str, EncoderBatcher] = {}
        """The encoder batchers by encoder model (versions share their encoder), each made on
        first use; read-only outside :meth:`batcher_for`."""
        self._batchers_lock = threading.Lock()
        self._closed = threading.Event()

    def _load_versions(self, state: PointerState) -> None:
        """Load every version the new pointers name (stable, canary, pins) before requests are
        routed by them, keeping the ones requests are routed to until then."""
        self.versions.retain(state.in_use | self.versions.retained)
        for version in state.in_use:
            self.versions.get(version)

    def _switched(self, state: PointerState) -> None:
        """Requests now go by ``state``: release the versions only the previous pointers named."""
        self.versions.retain(state.in_use)
        self.metrics.set_active(state.rollout.stable)

    def start(self) -> None:
        """Start following pointer flips and tenant key changes."""
        self.pointers.start()
        self.tenants.start()

    def close(self) -> None:
        """Stop background work and flush the audit log (the store is the caller's)."""
        self.pointers.stop()
        self.tenants.stop()
        with self._batchers_lock:
            self._closed.set()
            batchers = list(self.batchers.values())
        for batcher in batchers:  # queued questions fail with EncoderClosedError (503)
            batcher.close()
        if self.audit is not None:
            self.audit.close()

    # --- version operations (the admin routes): each takes effect here at once ---------------

    def published(self) -> list[VersionInfo]:
        """Published versions with their pointers."""
        return self.store.versions()

    def roll_out(self, version: str, percent: float) -> RolloutRecord:
        """Serve ``version`` to ``percent`` of sessions (100 makes it active)."""
        record = self.store.rollout(version, percent)
        self.pointers.refresh()
        return record

    def roll_back(self) -> RolloutRecord:
        """End a canary, or return to the previously active version."""
        record = self.store.rollback()
        self.pointers.refresh()
        return record

    def pin(self, tenant: str, version: str | None) -> None:
        """Pin ``tenant`` to ``version`` (``None`` removes the pin)."""
        self.store.pin(tenant, version)
        self.pointers.refresh()

    def issue_key(self, tenant: str, label: str = "") -> IssuedKey:
        """A new API key for ``tenant``, usable on this replica at once (on the others within
        their next key refresh)."""
        issued = self._keys().issue(tenant, label=label)
        self.tenants.refresh()
        return issued

    def revoke_key(self, key_id: str) -> TenantKey:
        """Revoke a tenant key by its id."""
        revoked = self._keys().revoke(key_id)
        self.tenants.refresh()
        return revoked

    def list_keys(self, tenant: str | None = None) -> list[TenantKey]:
        """Issued tenant keys (never their plain text), revoked ones included."""
        return self._keys().issued(tenant)

    def _keys(self) -> TenantKeys:
        return WarmTier.require(self.tenant_keys, "tenant keys")

    def collect_garbage(self, keep: int, partial_grace_s: float = PARTIAL_GRACE_S) -> GcReport:
        """Delete old versions (never one in use) and dead publishers' partial loads."""
        return self.store.gc(keep, partial_grace_s=partial_grace_s)

    def misses(
        self, *, tenant: str | None = None, since: float = 0.0, limit: int = 50
    ) -> list[MissSummary]:
        """Logged misses grouped by question, most frequent first, including the answers
        still queued for the audit log; none without an audit log."""
        if self.audit is not None:
            self.audit.flush()
        if self.audit_log is None:
            return []
        return self.audit_log.misses(tenant=tenant, since=since, limit=limit)

    @property
    def rollout(self) -> RolloutRecord:
        """The rollout this replica serves now (stable and canary)."""
        return self.pointers.state.rollout

    @property
    def ready(self) -> bool:
        """An active version is loaded and can answer."""
        stable = self.pointers.state.rollout.stable
        return stable is not None and stable in self.versions

    def version_for(self, tenant: str | None, session: str | None) -> LoadedVersion:
        """The loaded version this request is routed to (pin, canary or stable)."""
        state = self.pointers.state
        self.metrics.set_active(state.rollout.stable)
        version = choose_version(state, tenant=tenant, session=session)
        if version is None:
            raise NotReadyError
        return self.versions.get(version)

    def batcher_for(self, ready: LoadedVersion) -> EncoderBatcher | None:
        """The encoder batcher of ``ready``'s encoder; ``None`` when batching is off
        (``RAGC_ENCODER_BATCH=1``), the version routes without the encoder, or after close."""
        embedder = ready.embedder
        if self.settings.encoder_batch <= 1 or not ready.encodes or embedder is None:
            return None
        if self._closed.is_set():  # the encoder runs inline for whatever still asks
            return None
        found = self.batchers.get(embedder.model_id)
        if found is not None:
            return found
        with self._batchers_lock:
            if self._closed.is_set():
                return None
            return self.batchers.setdefault(
                embedder.model_id,
                EncoderBatcher(
                    embedder,
                    max_batch=self.settings.encoder_batch,
                    window=self.settings.encoder_window_ms / 1000,
                    observe=self.metrics.observe_batch,
                ),
            )

    def answer(self, question: str, **asked: Unpack[Asked]) -> Answer:
        """Answer one question; the whole request runs on the version it started with."""
        started = time.perf_counter()
        ladder = self._ladder(question, asked)
        return self._finish(ladder.walk(), question, asked.get("tenant"), started)

    async def answer_async(self, question: str, **asked: Unpack[Asked]) -> Answer:
        """:meth:`answer` for the event loop: only a question that needs the encoder waits, for
        its batch; the answer is the one :meth:`answer` gives (``latency_ms`` includes the wait)."""
        started = time.perf_counter()
        ladder = self._ladder(question, asked)
        batcher = self.batcher_for(ladder.ready)
        if self.composer.name != "offline":  # the composer does I/O: off the loop
            answer = await anyio.to_thread.run_sync(ladder.blocking, batcher)
        elif batcher is None:  # batching off: the encoder runs inline, on the loop
            answer = ladder.walk()
        else:
            found = ladder.cached()
            if found is None:
                found = ladder.walk(await batcher.embed(question))
            answer = found
        return self._finish(answer, question, asked.get("tenant"), started)

    def _ladder(self, question: str, asked: Asked) -> _Ladder:
        """The question's walk on the version it is routed to, with the tenant's L3 budget."""
        tenant = asked.get("tenant")
        if tenant is not None:
            validate_tenant(tenant)
        ready = self.version_for(tenant, asked.get("session"))
        ask = AskOptions(
            tenant=tenant,
            language=asked.get("language"),
            slots=asked.get("slots"),
            composer=self.composer,
            allow_l3=self.budget.allows(tenant),
        )
        return _Ladder(ready, question, ask)

    def _finish(
        self,
        answer: Answer,
        question: str,
        tenant: str | None,
        started: float,
    ) -> Answer:
        """Spend the L3 budget, count and audit."""
        if answer.layer == "L3":
            self.budget.spend(tenant)
        self.metrics.observe(answer.layer, time.perf_counter() - started)
        if self.audit is not None:
            self.audit.record(
                AuditEvent(
                    ts=time.time(),
                    tenant=tenant,
                    version=answer.version,
                    layer=answer.layer,
                    cache_key=answer.cache_key,
                    entry_id=answer.entry_id,
                    latency_ms=answer.latency_ms,
                    question=question,
                    normalized=answer.normalized,
                    confidence=answer.confidence,
                    candidates=answer.candidates,
                )
            )
        return answer


class _Ladder:
    """One question's walk down one version's ladder, in the steps the batcher needs."""

    __slots__ = ("ask", "began", "question", "ready")

    def __init__(self, ready: LoadedVersion, question: str, ask: AskOptions) -> None:
        self.ready = ready
        self.question = question
        self.ask = ask
        self.began = time.perf_counter()

    def cached(self) -> Answer | None:
        """The answer when it needs no encoder, else ``None`` (see ``answer_cached``)."""
        return self.ready.answer_cached(self.question, **self.ask)

    def walk(self, vector: Floats | None = None) -> Answer:
        """The answer, from ``vector`` when given (its ``latency_ms`` then counts from the
        first step, the wait for the vector included), else with the encoder inline."""
        answer = self.ready.answer(self.question, vector=vector, **self.ask)
        if vector is None:
            return answer
        latency = round((time.perf_counter() - self.began) * 1000, 3)
        return msgspec.structs.replace(answer, latency_ms=latency)

    def blocking(self, batcher: EncoderBatcher | None) -> Answer:
        """The answer in a worker thread, blocking on ``batcher`` (if any) for the vector."""
        if batcher is None:
            return self.walk()
        found = self.cached()
        return found if found is not None else self.walk(batcher.submit(self.question).result())
