"""Retry policy shared by every compile task: back off, and retry only what may succeed."""

from __future__ import annotations

from typing import Any, Final

from schemas.errors import is_retryable

__all__ = ["RETRY_DELAYS", "retry_on_retryable"]

RETRY_DELAYS: Final[list[float]] = [1.0, 5.0, 15.0]
"""Seconds between attempts (Prefect's backoff list)."""


def retry_on_retryable(task: Any, task_run: Any, state: Any) -> bool:
    """Prefect ``retry_condition_fn``: retry only a :class:`~schemas.errors.RetryableError`."""
    del task, task_run
    try:
        state.result()
    except Exception as exc:  # noqa: BLE001 - the failed state re-raises the task's error
        return is_retryable(exc)
    return False
