"""The answer service: pick the version, walk the ladder, count, audit — for HTTP and CLI alike."""

from __future__ import annotations

import time
from collections.abc import Mapping

import msgspec

from providers import make_provider
from providers.base import Provider
from schemas.keys import validate_tenant
from schemas.ladder import Answer
from schemas.rollout import PointerState, choose_version
from serving.audit import AuditWriter
from serving.budget import LLMBudget
from serving.errors import NotReadyError
from serving.metrics import Metrics
from serving.pointer import PointerWatcher
from serving.runtime import LoadedVersion, VersionCache
from serving.settings import ServeSettings
from stores.audit import AuditEvent, AuditLog
from stores.base import SnapshotStore

__all__ = ["AnswerService"]


class AnswerService:
    """Everything a request needs, built once per process."""

    def __init__(
        self,
        settings: ServeSettings,
        store: SnapshotStore,
        *,
        provider: Provider | None = None,
        audit_log: AuditLog | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.versions = VersionCache(store, route_cache=settings.route_cache)
        self.metrics = Metrics()
        # Reading the pointers loads the versions they name (now, and after every flip).
        self.pointers = PointerWatcher(
            store, interval=settings.poll_interval, on_change=self._load_versions
        )
        self.composer: Provider = provider or make_provider(settings.provider)
        self.audit_log = audit_log
        self.audit = AuditWriter(audit_log) if audit_log is not None else None
        self.budget = LLMBudget(
            settings.l3_budget, audit_log.l3_spent() if audit_log is not None else None
        )

    def _load_versions(self, state: PointerState) -> None:
        """Load every version the pointers name (stable, canary, pins): at start-up and on each
        flip, so a replica is ready for the new version before a request asks for it."""
        for version in {state.rollout.stable, state.rollout.canary, *state.pins.values()}:
            if version is not None:
                self.versions.get(version)
        self.metrics.set_active(state.rollout.stable)

    def start(self) -> None:
        """Start following pointer flips."""
        self.pointers.start()

    def close(self) -> None:
        """Stop background work and flush the audit log (the store is the caller's)."""
        self.pointers.stop()
        if self.audit is not None:
            self.audit.close()

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

    def answer(
        self,
        question: str,
        *,
        tenant: str | None = None,
        language: str | None = None,
        slots: Mapping[str, object] | None = None,
        session: str | None = None,
    ) -> Answer:
        """Answer one question; the whole request runs on the version it started with."""
        started = time.perf_counter()
        if tenant is not None:
            validate_tenant(tenant)
        ready = self.version_for(tenant, session)
        allow_l3 = self.budget.allows(tenant)
        answer = ready.answer(
            question,
            tenant=tenant,
            language=language,
            slots=slots,
            composer=self.composer,
            allow_l3=allow_l3,
        )
        if answer.layer == "L3":
            self.budget.spend(tenant)
        if not allow_l3:
            answer = msgspec.structs.replace(answer, faq_only=True)
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
