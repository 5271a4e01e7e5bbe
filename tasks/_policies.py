"""Retry policy shared by every compile task: back off, and retry only what may succeed."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final, ParamSpec, TypeVar

from prefect import Task, task
from prefect.cache_policies import NO_CACHE

from schemas.errors import is_retryable

__all__ = ["RETRY_DELAYS", "retry_on_retryable", "stage_task"]

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


P = ParamSpec("P")
R = TypeVar("R")


def stage_task(*, retries: int = 2) -> Callable[[Callable[P, R]], Task[P, R]]:
    """A compile stage as a Prefect task named for its function (``index_chunks`` runs as
    ``index-chunks``): retries with backoff for retryable errors only.

    Stage results are reused through the content-addressed build cache (parses, embeddings and
    every provider call are keyed by content hashes), not through Prefect's result cache, so the
    task inputs (clients, caches, indexes) need not be serializable.
    """

    def wrap(fn: Callable[P, R]) -> Task[P, R]:
        decorate = task(
            name=fn.__name__.replace("_", "-"),
            retries=retries,
            retry_delay_seconds=RETRY_DELAYS,
            retry_condition_fn=retry_on_retryable,
            cache_policy=NO_CACHE,
        )
        return decorate(fn)

    return wrap
