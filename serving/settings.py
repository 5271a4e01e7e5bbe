"""Service settings, read from the environment (``RAGC_*``); secrets only from there."""

from __future__ import annotations

import os
from collections.abc import Mapping

import msgspec

from schemas.errors import InvalidInputError

__all__ = ["ServeSettings"]

DEFAULT_STORE = "sqlite:///.ragc/knowledge.db"


class ServeSettings(msgspec.Struct, frozen=True, kw_only=True):
    """Everything the answer service reads from its environment."""

    store: str = DEFAULT_STORE
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
        env = os.environ if environ is None else environ

        def number(name: str, kind: type[int] | type[float]) -> float | int | None:
            raw = env.get(name, "").strip()
            if not raw:
                return None
            try:
                return kind(raw)
            except ValueError as exc:
                raise InvalidInputError(f"{name}={raw!r} is not a number") from exc

        budget = number("RAGC_L3_BUDGET", int)
        poll = number("RAGC_POINTER_POLL_S", float)
        route_cache = number("RAGC_ROUTE_CACHE", int)
        if route_cache is not None and route_cache < 0:
            raise InvalidInputError(
                f"RAGC_ROUTE_CACHE={route_cache} is negative", hint="use 0 to turn the memo off"
            )
        batch = number("RAGC_ENCODER_BATCH", int)
        if batch is not None and batch < 1:
            raise InvalidInputError(
                f"RAGC_ENCODER_BATCH={batch} is below 1", hint="use 1 to turn batching off"
            )
        window = number("RAGC_ENCODER_WINDOW_MS", float)
        if window is not None and not 0 <= window <= 1000:
            raise InvalidInputError(
                f"RAGC_ENCODER_WINDOW_MS={window} is out of range",
                hint="a few milliseconds: between 0 and 1000",
            )
        return cls(
            store=env.get("RAGC_STORE") or DEFAULT_STORE,
            admin_token=env.get("RAGC_ADMIN_TOKEN") or None,
            webhook_secret=env.get("RAGC_WEBHOOK_SECRET") or None,
            provider=env.get("RAGC_PROVIDER") or "offline",
            l3_budget=int(budget) if budget is not None else None,
            poll_interval=float(poll) if poll is not None else 0.25,
            knowledge=env.get("RAGC_KNOWLEDGE") or None,
            audit=(env.get("RAGC_AUDIT") or "1").lower() not in ("0", "false", "no", "off"),
            warm_dsn=env.get("RAGC_WARM_DSN") or None,
            route_cache=int(route_cache) if route_cache is not None else 10_000,
            encoder_batch=int(batch) if batch is not None else 32,
            encoder_window_ms=float(window) if window is not None else 1.0,
        )
