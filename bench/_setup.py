"""What every benchmark sets before importing the project: offline, quiet Prefect and friends."""

from __future__ import annotations

import os
import tempfile

__all__ = ["quiet_offline_environment"]


def quiet_offline_environment() -> None:
    """Analytics off, logs quiet, a throwaway ``PREFECT_HOME`` (explicit settings win)."""
    for name, value in (
        ("PREFECT_SERVER_ANALYTICS_ENABLED", "false"),
        ("DO_NOT_TRACK", "1"),
        ("PREFECT_LOGGING_LEVEL", "CRITICAL"),
        ("UNSTRUCTURED_DISABLE_NOTICE", "1"),
        ("TQDM_DISABLE", "1"),
    ):
        os.environ.setdefault(name, value)
    os.environ.setdefault("PREFECT_HOME", tempfile.mkdtemp(prefix="ragc-bench-prefect-"))
