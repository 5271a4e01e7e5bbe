"""``ragc tenant-keys``: issue, list and revoke the API keys that say who a tenant is."""

from __future__ import annotations

import time
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Annotated

import typer

from ragc.commands._base import (
    JsonOpt,
    StoreOpt,
    app,
    console,
    emit,
    emit_rows,
    fails_cleanly,
    opened_warm,
)

if TYPE_CHECKING:
    from stores.tenant_keys import TenantKeys

keys_app = typer.Typer(
    help="Tenant API keys: a request speaks for the tenant whose key it sends (X-API-Key)."
)
app.add_typer(keys_app, name="tenant-keys")


def _keys(store: str | None) -> AbstractContextManager[TenantKeys]:
    from stores.warm import WarmTier  # noqa: PLC0415

    return opened_warm(store, WarmTier.tenant_keys, "tenant keys")


def _when(at: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime(at)) if at is not None else "-"


@keys_app.command("add")
@fails_cleanly
def add_key(
    tenant: Annotated[str, typer.Argument(help="Tenant id the key speaks for.")],
    label: Annotated[str, typer.Option(help="What the key is for (shown in listings).")] = "",
    store: StoreOpt = "",
    as_json: JsonOpt = False,
) -> None:
    """Issue a key for TENANT. Its plain text is printed this once and stored only hashed."""
    with _keys(store) as keys:
        issued = keys.issue(tenant, label=label)
    if as_json:
        emit(issued, True, "")
        return
    console.print(f"key {issued.info.key_id} for tenant {tenant}:", highlight=False)
    console.print(issued.key, highlight=False, soft_wrap=True)
    console.print(
        "[dim]store it now: it cannot be shown again. Clients send it as the X-API-Key header.[/]"
    )


@keys_app.command("list")
@fails_cleanly
def list_keys(
    tenant: Annotated[str | None, typer.Option(help="Only this tenant's keys.")] = None,
    store: StoreOpt = "",
    as_json: JsonOpt = False,
) -> None:
    """List issued keys (ids, tenants, labels; never the keys themselves)."""
    with _keys(store) as keys:
        found = keys.issued(tenant)
    emit_rows(
        found,
        as_json,
        ("key id", "tenant", "label", "issued", "revoked"),
        lambda k: (k.key_id, k.tenant, k.label, _when(k.created_at), _when(k.revoked_at)),
        "no tenant keys issued",
    )


@keys_app.command("revoke")
@fails_cleanly
def revoke_key(
    key_id: Annotated[str, typer.Argument(help="Key id, as `ragc tenant-keys list` shows it.")],
    store: StoreOpt = "",
    as_json: JsonOpt = False,
) -> None:
    """Revoke a key: running services refuse it within seconds."""
    with _keys(store) as keys:
        revoked = keys.revoke(key_id)
    emit(revoked, as_json, f"revoked key {revoked.key_id} of tenant {revoked.tenant}")
