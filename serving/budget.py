"""The per-tenant monthly LLM budget: when a tenant has spent it, L3 is skipped (FAQ-only mode)."""

from __future__ import annotations

import threading
from collections.abc import Mapping
from datetime import UTC, datetime

__all__ = ["LLMBudget"]


def _month(now: datetime) -> str:
    return now.strftime("%Y-%m")


class LLMBudget:
    """L3 answers per tenant in the current calendar month (UTC) against a limit."""

    def __init__(self, limit: int | None, spent: Mapping[str | None, int] | None = None) -> None:
        self.limit = limit
        self._spent: dict[str | None, int] = dict(spent or {})
        self._month = _month(datetime.now(UTC))
        self._lock = threading.Lock()

    def _roll(self) -> None:
        month = _month(datetime.now(UTC))
        if month != self._month:
            self._month, self._spent = month, {}

    def allows(self, tenant: str | None) -> bool:
        """Whether ``tenant`` may still get an L3 answer this month."""
        if self.limit is None:
            return True
        with self._lock:
            self._roll()
            return self._spent.get(tenant, 0) < self.limit

    def spend(self, tenant: str | None) -> None:
        """Count one L3 answer for ``tenant``."""
        with self._lock:
            self._roll()
            self._spent[tenant] = self._spent.get(tenant, 0) + 1

    def spent(self, tenant: str | None) -> int:
        with self._lock:
            self._roll()
            return self._spent.get(tenant, 0)
