"""The ``ragc`` command line: one function per command, no logic of its own.

The commands live in :mod:`ragc.commands`, one module per domain; importing them registers them
on the app, in the order ``ragc --help`` lists them.
"""

from __future__ import annotations

from ragc.commands import compile, review, serve, setup, tenants, versions  # noqa: F401
from ragc.commands._base import app

__all__ = ["app"]
