"""The Litestar application: ``create_app`` builds it from settings (tests inject their own parts).

Run it with ``ragc serve`` (granian) or any ASGI server via ``serving.app:create_app_from_env``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from litestar import Litestar
from litestar.datastructures import State
from litestar.di import Provide
from litestar.openapi import OpenAPIConfig

from providers.base import Provider
from serving.controllers.admin import AdminController
from serving.controllers.answer import AnswerController
from serving.controllers.health import HealthController
from serving.dependencies import provide_service, provide_settings
from serving.errors import exception_handlers
from serving.service import AnswerService
from serving.settings import ServeSettings
from stores import SnapshotStore, open_store
from stores.audit import SqliteAuditLog

__all__ = ["create_app", "create_app_from_env"]

MAX_BODY = 1024 * 1024
"""Largest request body (a full batch of 1,000 questions fits; 100 KB questions do not)."""


def create_app(
    settings: ServeSettings | None = None,
    *,
    store: SnapshotStore | None = None,
    provider: Provider | None = None,
    audit_log: SqliteAuditLog | None = None,
) -> Litestar:
    """The answer service. Injected parts are the caller's to close; the rest it opens itself."""
    config = settings or ServeSettings.from_env()

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        own_store = store is None
        opened = store or open_store(config.store)
        own_log = audit_log is None and config.audit and config.store.startswith("sqlite:///")
        log = audit_log or (SqliteAuditLog(config.store) if own_log else None)
        service = AnswerService(config, opened, provider=provider, audit_log=log)
        service.start()
        app.state.service = service
        try:
            yield
        finally:
            service.close()
            if own_log and log is not None:
                log.close()
            if own_store:
                opened.close()

    return Litestar(
        route_handlers=[AnswerController, AdminController, HealthController],
        dependencies={
            "service": Provide(provide_service, sync_to_thread=False),
            "settings": Provide(provide_settings, sync_to_thread=False),
        },
        exception_handlers=exception_handlers,  # type: ignore[arg-type]
        lifespan=[lifespan],
        state=State({"settings": config}),
        openapi_config=OpenAPIConfig(
            title="ragc answer service",
            version="0.1.0",
            description="Answers from compiled, versioned knowledge: L1 exact, L2 intent, "
            "L3 topic block, or an honest fallback.",
        ),
        request_max_body_size=MAX_BODY,
        debug=False,
    )


def create_app_from_env() -> Litestar:
    """Factory for ASGI servers: everything from ``RAGC_*`` environment variables."""
    return create_app(ServeSettings.from_env())
