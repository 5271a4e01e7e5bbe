"""``/v1/admin``: the CLI's version operations over HTTP, behind the admin credential."""

from __future__ import annotations

from litestar import Controller, get, post
from litestar.di import NamedDependency
from litestar.handlers import HTTPRouteHandler
from litestar.params import FromQuery, JSONBody

from schemas.rollout import Rollout
from serving.dependencies import admin_guard, strict_body
from serving.dto import (
    GcReport,
    GcRequest,
    IssuedKey,
    KeyRequest,
    KeysResponse,
    MissesResponse,
    PinRequest,
    PinResponse,
    RevokeKeyRequest,
    RolloutRequest,
    TenantKey,
    VersionsResponse,
)
from serving.service import AnswerService

__all__ = ["AdminController"]


def _command(path: str, operation_id: str) -> HTTPRouteHandler:
    """An admin operation: a POST run in a worker thread, its JSON body typed strictly."""
    return post(
        path,
        operation_id=operation_id,
        status_code=200,
        sync_to_thread=True,
        before_request=strict_body,
    )


class AdminController(Controller):
    """List versions, roll out, roll back, pin tenants, manage tenant keys, collect old versions,
    read misses."""

    path = "/v1"
    guards = [admin_guard]  # noqa: RUF012 - Litestar's declared class attribute
    tags = ["admin"]  # noqa: RUF012 - Litestar reads it as a class attribute

    @get("/admin/versions", operation_id="list_versions", sync_to_thread=True)
    def versions(self, service: NamedDependency[AnswerService]) -> VersionsResponse:
        """Published versions with their pointers."""
        return VersionsResponse(versions=service.published())

    @_command("/admin/rollout", "rollout")
    def rollout(
        self, data: JSONBody[RolloutRequest], service: NamedDependency[AnswerService]
    ) -> Rollout:
        """Serve a version to a share of sessions (100 makes it active)."""
        return service.roll_out(data.version, data.percent).public()

    @_command("/admin/rollback", "rollback")
    def rollback(self, service: NamedDependency[AnswerService]) -> Rollout:
        """End a canary, or return to the previously active version."""
        return service.roll_back().public()

    @_command("/admin/pins", "pin_tenant")
    def pin(
        self, data: JSONBody[PinRequest], service: NamedDependency[AnswerService]
    ) -> PinResponse:
        """Pin a tenant to a version (``version: null`` removes the pin)."""
        service.pin(data.tenant, data.version)
        return PinResponse(tenant=data.tenant, version=data.version)

    @_command("/admin/tenant-keys", "issue_tenant_key")
    def issue_key(
        self, data: JSONBody[KeyRequest], service: NamedDependency[AnswerService]
    ) -> IssuedKey:
        """Issue an API key for a tenant: its plain text is in this response and nowhere else."""
        return service.issue_key(data.tenant, data.label)

    @get("/admin/tenant-keys", operation_id="list_tenant_keys", sync_to_thread=True)
    def keys(
        self, service: NamedDependency[AnswerService], tenant: FromQuery[str | None] = None
    ) -> KeysResponse:
        """Issued tenant keys (ids, tenants, labels, when issued and revoked; never the key)."""
        return KeysResponse(keys=service.list_keys(tenant))

    @_command("/admin/tenant-keys/revoke", "revoke_tenant_key")
    def revoke_key(
        self, data: JSONBody[RevokeKeyRequest], service: NamedDependency[AnswerService]
    ) -> TenantKey:
        """Revoke a tenant key: refused at once here, on other replicas within seconds."""
        return service.revoke_key(data.key_id)

    @_command("/admin/gc", "gc")
    def gc(self, data: JSONBody[GcRequest], service: NamedDependency[AnswerService]) -> GcReport:
        """Delete old versions (never one in use) and dead partial loads."""
        return service.collect_garbage(data.keep, data.partial_grace_s)

    @get("/misses", operation_id="list_misses", sync_to_thread=True)
    def misses(
        self,
        service: NamedDependency[AnswerService],
        tenant: FromQuery[str | None] = None,
        limit: FromQuery[int] = 50,
        since: FromQuery[float] = 0.0,
    ) -> MissesResponse:
        """Misses grouped by question, most frequent first, with auto-FAQ suggestions."""
        found = service.misses(tenant=tenant, since=since, limit=max(1, min(limit, 1000)))
        return MissesResponse(
            total=sum(m.count for m in found),
            misses=found,
            suggestions=[m for m in found if m.count >= 2][:10],
        )
