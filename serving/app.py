"""The Litestar application: ``create_app`` builds it from settings (tests inject their own parts).

Run it with ``ragc serve`` (granian) or any ASGI server via ``serving.app:create_app_from_env``.
"""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator
from contextlib import ExitStack, asynccontextmanager

import anyio
from litestar import Litestar
from litestar.datastructures import State
from litestar.di import Provide
from litestar.openapi import OpenAPIConfig

from providers.base import Provider
from serving.controllers.admin import AdminController
from serving.controllers.answer import AnswerController
from serving.controllers.health import HealthController
from serving.controllers.webhooks import WebhookController
from serving.deadlines import ReadDeadlines
from serving.dependencies import (
    bounded_body,
    provide_dispatcher,
    provide_service,
    provide_settings,
)
from serving.dispatch import Dispatcher, RecompileCommand, recompile_command
from serving.errors import exception_handlers
from serving.observe import configure_logging, observe_requests
from serving.service import AnswerService
from serving.settings import ServeSettings
from stores import SnapshotStore, open_store
from stores.audit import AuditLog
from stores.warm import WarmTier

__all__ = ["create_app", "create_app_from_env"]

MAX_BODY = 1024 * 1024
"""Largest request body (a full batch of 1,000 questions fits; 100 KB questions do not)."""


def create_app(
    settings: ServeSettings | None = None,
    *,
    store: SnapshotStore | None = None,
    provider: Provider | None = None,
    audit_log: AuditLog | None = None,
    recompile: RecompileCommand = recompile_command,
) -> Litestar:
    """The answer service. Injected parts are the caller's to close; the rest it opens itself.

    ``recompile`` builds the webhook's embedded-mode recompile command (tests run a quick one).
    """
    config = settings or ServeSettings.from_env()

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        with ExitStack() as resources:  # closes, in reverse, whatever was opened so far
            opened = store
            if opened is None:
                opened = open_store(config.store)
                resources.callback(opened.close)
            url = opened.url
            pool = None
            if config.warm_dsn:  # the Postgres warm tier holds the logs and the ledger
                from stores.postgres import open_pool  # noqa: PLC0415 - only when configured

                pool = open_pool(config.warm_dsn)
                resources.callback(pool.close)
            warm = WarmTier(url, config.warm_dsn, pool=pool)
            log = audit_log
            if log is None and config.audit:
                log = warm.audit_log()
                if log is not None:
                    resources.callback(log.close)
            keys = warm.tenant_keys() if config.tenant_auth == "keys" else None
            if keys is not None:
                resources.callback(keys.close)
            service = AnswerService(
                config, opened, provider=provider, audit_log=log, tenant_keys=keys
            )
            resources.callback(service.close)
            service.start()
            app.state.service = service
            app.state.batches = anyio.CapacityLimiter(1)  # one batch at a time per process
            app.state.deadlines = ReadDeadlines(config.body_timeout_s)  # on this loop
            app.state.access_log = config.access_log
            dispatcher = None
            if config.webhook_secret:
                ledger = WarmTier.require(warm.ledger(), "the knowledge-changed webhook")
                resources.callback(ledger.close)
                dispatcher = Dispatcher(
                    ledger, store=url, knowledge=config.knowledge, command=recompile
                )
                resources.callback(dispatcher.close)
                dispatcher.dispatch_pending()
            app.state.dispatcher = dispatcher
            # Loaded versions are long-lived and immutable: move them out of the collector's
            # way, so full collections stop pausing requests (tens of ms with a large snapshot).
            gc.collect()
            gc.freeze()
            yield

    return Litestar(
        route_handlers=[AnswerController, AdminController, HealthController, WebhookController],
        dependencies={
            "service": Provide(provide_service, sync_to_thread=False),
            "settings": Provide(provide_settings, sync_to_thread=False),
            "dispatcher": Provide(provide_dispatcher, sync_to_thread=False),
        },
        exception_handlers=exception_handlers,  # type: ignore[arg-type]
        before_request=bounded_body,
        middleware=[observe_requests],
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
        logging_config=None,  # logging is the process's (configure_logging), not the app's
    )


def create_app_from_env() -> Litestar:
    """Factory for ASGI servers: everything from ``RAGC_*`` environment variables, and the
    process's logging set up as ``RAGC_LOG_FORMAT`` says."""
    settings = ServeSettings.from_env()
    configure_logging(settings.log_format)
    return create_app(settings)
