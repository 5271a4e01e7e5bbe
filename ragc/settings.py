"""Settings read from the environment (``RAGC_*``); secrets never come from anywhere else."""

from __future__ import annotations

import os

import msgspec

from stores import DEFAULT_STORE_URL

__all__ = ["Settings"]


class Settings(msgspec.Struct, frozen=True, kw_only=True):
    """Everything ragc reads from its environment."""

    store: str = DEFAULT_STORE_URL
    """URL of the snapshot store (``RAGC_STORE``)."""
    warm_dsn: str | None = None
    """Postgres warm tier (``RAGC_WARM_DSN``)."""

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        return cls(
            store=env.get("RAGC_STORE") or DEFAULT_STORE_URL,
            warm_dsn=env.get("RAGC_WARM_DSN") or None,
        )
