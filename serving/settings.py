"""Service settings, read from the environment (``RAGC_*``); secrets only from there."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

import msgspec

from schemas.settings import Environment

__all__ = ["ServeSettings"]


def _default(name: str) -> Any:
    """The default of ``RAGC_<NAME>``, as :class:`~schemas.settings.Environment` declares it."""
    return Environment.model_fields[name].default


class ServeSettings(msgspec.Struct, frozen=True, kw_only=True):
    """Everything the answer service reads from its environment: each field is the variable
    of its name (``store`` is ``RAGC_STORE``), with its default."""

    store: str = _default("store")
    """Snapshot store URL."""
    admin_token: str | None = None
    """Bearer token of the admin API; without it admin routes refuse."""
    webhook_secret: str | None = None
    """HMAC key of the knowledge-changed webhook."""
    tenant_auth: Literal["keys", "trust"] = _default("tenant_auth")
    """``keys``: a request's tenant is the one its ``X-API-Key`` belongs to; ``trust``: the
    request's ``tenant`` field is believed (see :mod:`serving.tenants`)."""
    provider: str = _default("provider")
    """L3 composer, one of :data:`providers.PROVIDERS`."""
    l3_budget: int | None = None
    """L3 answers a tenant may get per calendar month; none: unlimited."""
    pointer_poll_s: float = _default("pointer_poll_s")
    """Seconds between reads of the version pointers."""
    body_timeout_s: float = _default("body_timeout_s")
    """Seconds a client has to send a request's body; then 408 and the connection is closed."""
    knowledge: str | None = None
    """Knowledge folder the webhook recompiles in embedded mode."""
    audit: bool = _default("audit")
    """Record every answer in the audit log."""
    access_log: bool = _default("access_log")
    """Log one ``ragc.access`` line per request."""
    log_format: Literal["text", "json"] = _default("log_format")
    """How ``ragc serve`` writes its logs: for people, or one JSON object per line."""
    route_cache: int = _default("route_cache")
    """Distinct question texts per loaded version whose router verdict is remembered (0 turns
    the memo off)."""
    encoder_batch: int = _default("encoder_batch")
    """Most questions the sentence encoder embeds in one call across concurrent requests (1
    turns batching off: each request runs the encoder inline)."""
    encoder_window_ms: float = _default("encoder_window_ms")
    """Longest wait, after a question is queued for the encoder, for others to share its
    batch."""
    warm_dsn: str | None = None
    """Postgres warm tier: audit log, miss log and webhook ledger go there instead of the
    store's SQLite file."""

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> ServeSettings:
        """The settings of ``environ`` (default ``os.environ``), checked by
        :class:`schemas.settings.Environment`."""
        env = Environment.read(environ)
        return cls(**{name: getattr(env, name) for name in cls.__struct_fields__})
