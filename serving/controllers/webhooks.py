"""``/v1/webhooks``: the signed knowledge-changed webhook (record, then emit or recompile)."""

from __future__ import annotations

import time
from typing import Any

from litestar import Controller, Request, post
from litestar.connection import ASGIConnection
from litestar.di import NamedDependency
from litestar.exceptions import NotAuthorizedException, PermissionDeniedException
from litestar.handlers.base import BaseRouteHandler
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import JSONBody
from litestar.status_codes import HTTP_202_ACCEPTED

from serving.dispatch import Dispatcher
from serving.dto import ErrorBody, KnowledgeChangedRequest, KnowledgeChangedResponse
from serving.settings import ServeSettings
from serving.signatures import (
    SIGNATURE_HEADER,
    SignatureError,
    SignedDelivery,
    delivery_id,
    verify_signature,
)

__all__ = ["WebhookController", "webhook_guard"]

_REFUSALS = {
    401: ResponseSpec(ErrorBody, description="Unsigned, badly signed or stale delivery."),
    403: ResponseSpec(ErrorBody, description="The webhook is disabled (no RAGC_WEBHOOK_SECRET)."),
    409: ResponseSpec(ErrorBody, description="A replayed delivery (already received)."),
}


async def webhook_guard(
    connection: ASGIConnection[Any, Any, Any, Any], handler: BaseRouteHandler
) -> None:
    """Admit only deliveries signed with ``RAGC_WEBHOOK_SECRET`` (before the body is parsed)."""
    del handler
    settings: ServeSettings = connection.app.state.settings
    if not settings.webhook_secret:
        raise PermissionDeniedException(
            "the knowledge-changed webhook is disabled: set RAGC_WEBHOOK_SECRET to a shared "
            f"secret and sign each delivery with it ({SIGNATURE_HEADER})"
        )
    if not isinstance(connection, Request):  # pragma: no cover - HTTP routes get a Request
        raise PermissionDeniedException("the webhook takes HTTP requests only")
    body = await connection.body()
    try:
        signed_at = verify_signature(
            settings.webhook_secret,
            connection.headers.get(SIGNATURE_HEADER),
            body,
            now=time.time(),
        )
    except SignatureError as exc:
        raise NotAuthorizedException(
            exc.one_line(), headers={"WWW-Authenticate": f'HMAC-SHA256 header="{SIGNATURE_HEADER}"'}
        ) from exc
    connection.state.webhook = SignedDelivery(
        delivery=delivery_id(signed_at, body), signed_at=signed_at
    )


class WebhookController(Controller):
    """Signed notifications that documents of a knowledge folder changed."""

    path = "/v1/webhooks"
    guards = [webhook_guard]  # noqa: RUF012 - Litestar's declared class attribute
    tags = ["webhooks"]  # noqa: RUF012 - Litestar reads it as a class attribute

    @post(
        "/knowledge-changed",
        operation_id="knowledge_changed",
        status_code=HTTP_202_ACCEPTED,
        sync_to_thread=True,
        responses=_REFUSALS,
    )
    def knowledge_changed(
        self,
        data: JSONBody[KnowledgeChangedRequest],
        request: Request[Any, Any, Any],
        dispatcher: NamedDependency[Dispatcher],
    ) -> KnowledgeChangedResponse:
        """Record a signed change notice, then emit the Prefect event or start a recompile.

        Sign with ``X-Ragc-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>." + body>``.
        401: unsigned, badly signed or stale; 403: the webhook is not configured; 409: a
        replayed delivery.
        """
        signed: SignedDelivery = request.state.webhook
        entry = dispatcher.ledger.record(
            signed.delivery,
            signed_at=signed.signed_at,
            knowledge=data.knowledge or dispatcher.default_name,
            changed=data.changed,
        )
        result = dispatcher.dispatch(entry)
        return KnowledgeChangedResponse(
            delivery=result.delivery,
            status=result.status,
            mode=dispatcher.mode,
            detail=result.detail,
        )
