"""Service settings, read from the environment (``RAGC_*``); secrets only from there."""

from __future__ import annotations

from collections.abc import Mapping

import msgspec

from schemas.settings import DEFAULT_STORE_URL, Environment

__all__ = ["ServeSettings"]


class ServeSettings(msgspec.Struct, frozen=True, kw_only=True):
    """Everything the answer service reads from its environment."""

    store: str = DEFAULT_STORE_URL
    """Snapshot store URL (``RAGC_STORE``)."""
    admin_token: str | None = None
    """Bearer token of the admin API (``RAGC_ADMIN_TOKEN``); without it admin routes refuse."""
    webhook_secret: str | None = None
    """HMAC key of the knowledge-changed webhook (``RAGC_WEBHOOK_SECRET``)."""
    provider: str = "offline"
    """L3 composer, one of :data:`providers.PROVIDERS` (``RAGC_PROVIDER``)."""
    l3_budget: int | None = None
    """L3 answers a tenant may get per calendar month (``RAGC_L3_BUDGET``); none: unlimited."""
    poll_interval: float = 0.25
    """Seconds between reads of the version pointers (``RAGC_POINTER_POLL_S``)."""
    knowledge: str | None = None
    """Knowledge folder the webhook recompiles in embedded mode (``RAGC_KNOWLEDGE``)."""
    audit: bool = True
    """Record every answer in the audit log (``RAGC_AUDIT``, default on)."""
    route_cache: int = 10_000
    """Distinct question texts per loaded version whose router verdict is remembered
    (``RAGC_ROUTE_CACHE``; 0 turns the memo off)."""
    encoder_batch: int = 32
    """Most questions the sentence encoder embeds in one call across concurrent requests
    (``RAGC_ENCODER_BATCH``; 1 turns batching off: each request runs the encoder inline)."""
    encoder_window_ms: float = 1.0
    """Longest wait, after a question is queued for the encoder, for others to share its batch
    (``RAGC_ENCODER_WINDOW_MS``)."""
    warm_dsn: str | None = None
    """Postgres warm tier (``RAGC_WARM_DSN``): audit log, miss log and webhook ledger go there
    instead of the store's SQLite file."""

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> ServeSettings:
        """The settings of ``environ`` (default ``os.environ``), checked by
        :class:`schemas.settings.Environment`."""
        env = Environment.read(environ)
        return cls(
            store=env.store,
            admin_token=env.admin_token,
            webhook_secret=env.webhook_secret,
            provider=env.provider,
            l3_budget=env.l3_budget,
            poll_interval=env.pointer_poll_s,
            knowledge=env.knowledge,
            audit=env.audit,
            warm_dsn=env.warm_dsn,
            route_cache=env.route_cache,
            encoder_batch=env.encoder_batch,
            encoder_window_ms=env.encoder_window_ms,
        )
