"""Tenant API keys in Postgres: :class:`stores.tenant_keys.SqliteTenantKeys`'s twin."""

from __future__ import annotations

from stores._pg import PgTables
from stores.tenant_keys import TenantKeys

__all__ = ["PostgresTenantKeys"]


class PostgresTenantKeys(PgTables, TenantKeys):
    """Tenant keys in the Postgres warm tier (a DSN, or an injected pool). Thread-safe."""
