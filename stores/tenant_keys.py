"""Tenant API keys: who may ask for a tenant's answers, kept hashed in the warm tier.

A key is issued once (``ragc tenant-keys add TENANT``): its plain text is shown to the operator
and never stored. The table keeps its SHA-256 digest — a key is 32 random bytes, so a fast
digest is as safe as a slow one and costs the service nothing per request — with the tenant it
belongs to. The service holds the digest → tenant map of the live keys in memory and re-reads
it every few seconds, so a revoked key stops working on every replica within one refresh.

The same statements run on the store's SQLite file and on Postgres (:class:`TenantKeys`).
"""

from __future__ import annotations

import hashlib
import secrets
import time
from collections.abc import Sequence
from typing import Final

import msgspec

from schemas.errors import InvalidInputError
from schemas.keys import validate_tenant
from stores._sql import SqliteTables, SqlTables
from stores.sqlite import connect

__all__ = [
    "KEY_PREFIX",
    "IssuedKey",
    "SqliteTenantKeys",
    "TenantKey",
    "TenantKeys",
    "digest_key",
]

KEY_PREFIX: Final = "ragc_tk_"
"""Every tenant key starts so: a secret scanner can recognise one that leaked."""
MAX_LABEL: Final = 200


class TenantKey(msgspec.Struct, frozen=True, kw_only=True):
    """One issued key, as listed (never its plain text)."""

    key_id: str
    """The first 12 hex digits of the key's digest: what ``revoke`` takes and logs show."""
    tenant: str
    label: str = ""
    created_at: float
    revoked_at: float | None = None


class IssuedKey(msgspec.Struct, frozen=True, kw_only=True):
    """A key just issued: ``key`` is its plain text, shown this once."""

    key: str
    info: TenantKey


def digest_key(key: str) -> str:
    """The stored form of a key: its SHA-256, in hex."""
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()


_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS tenant_keys (
    digest     TEXT PRIMARY KEY,
    key_id     TEXT NOT NULL UNIQUE,
    tenant     TEXT NOT NULL,
    label      TEXT NOT NULL DEFAULT '',
    created_at REAL NOT NULL,
    revoked_at REAL
);
CREATE INDEX IF NOT EXISTS tenant_keys_by_tenant ON tenant_keys (tenant);
"""
_COLUMNS: Final = "key_id, tenant, label, created_at, revoked_at"


def _row(row: Sequence[object]) -> TenantKey:
    return msgspec.convert(dict(zip(_COLUMNS.split(", "), row, strict=True)), TenantKey)


class TenantKeys(SqlTables):
    """Where tenant keys live, the store's SQLite file or the warm tier: one copy of the SQL."""

    def issue(self, tenant: str, *, label: str = "") -> IssuedKey:
        """A new key for ``tenant``; its plain text is in the result and nowhere else."""
        validate_tenant(tenant)
        if len(label) > MAX_LABEL or "\n" in label:
            raise InvalidInputError(
                "a key label is one line of at most 200 characters",
                hint="say what the key is for, e.g. --label 'support widget'",
            )
        key = KEY_PREFIX + secrets.token_urlsafe(32)
        digest = digest_key(key)
        info = TenantKey(key_id=digest[:12], tenant=tenant, label=label, created_at=time.time())
        self._count(
            f"INSERT INTO {{t}}tenant_keys (digest, {_COLUMNS}) "  # noqa: S608 - constant
            "VALUES (?, ?, ?, ?, ?, ?)",
            (digest, info.key_id, info.tenant, info.label, info.created_at, None),
        )
        return IssuedKey(key=key, info=info)

    def revoke(self, key_id: str) -> TenantKey:
        """Revoke a key by its id (revoking twice keeps the first time); unknown: an error."""
        self._count(
            "UPDATE {t}tenant_keys SET revoked_at = ? WHERE key_id = ? AND revoked_at IS NULL",
            (time.time(), key_id),
        )
        found = self._one(
            f"SELECT {_COLUMNS} FROM {{t}}tenant_keys WHERE key_id = ?",  # noqa: S608
            (key_id,),
        )
        if found is None:
            raise InvalidInputError(
                f"no tenant key {key_id!r}", hint="`ragc tenant-keys list` shows the key ids"
            )
        return _row(found)

    def issued(self, tenant: str | None = None) -> list[TenantKey]:
        """Every key (of one tenant), oldest first, revoked ones included."""
        where, params = ("WHERE tenant = ? ", (tenant,)) if tenant is not None else ("", ())
        rows = self._all(
            f"SELECT {_COLUMNS} FROM {{t}}tenant_keys {where}"  # noqa: S608 - constant
            "ORDER BY created_at, key_id",
            params,
        )
        return [_row(r) for r in rows]

    def live(self) -> dict[str, str]:
        """Digest → tenant of every key not revoked: what the service checks keys against."""
        rows = self._all("SELECT digest, tenant FROM {t}tenant_keys WHERE revoked_at IS NULL")
        return {str(digest): str(tenant) for digest, tenant in rows}


class SqliteTenantKeys(SqliteTables, TenantKeys):
    """Tenant keys in a SQLite file (a ``sqlite:///`` URL, usually the store's). Thread-safe."""

    def __init__(self, url: str) -> None:
        super().__init__(connect(url, _SCHEMA))
