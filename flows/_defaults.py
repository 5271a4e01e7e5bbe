"""Defaults the flows share (kept light: deployments import it before any heavy module)."""

from __future__ import annotations

import os
from typing import Final

DEFAULT_STORE: Final = "sqlite:///.ragc/knowledge.db"


def store_url(url: str | None = None) -> str:
    """The store URL: the parameter, else ``$RAGC_STORE``, else the embedded SQLite file."""
    return url or os.environ.get("RAGC_STORE") or DEFAULT_STORE
