"""Defaults the flows share (kept light: deployments import it before any heavy module)."""

from __future__ import annotations

from schemas.settings import Environment


def store_url(url: str | None = None) -> str:
    """The store URL: the parameter, else ``$RAGC_STORE``, else the embedded SQLite file."""
    return url or Environment.read().store
