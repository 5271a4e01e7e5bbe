"""The app ``bench/serve.py`` serves: the real answer service plus one constant route.

    granian --interface asgi --factory bench.serve_app:create_bench_app

``GET /bench/constant`` returns a small constant JSON body from a synchronous handler that runs
on the event loop: no body to decode, no dependency, no ladder. Served by the same server and
the same Litestar app as ``/v1/answer``, it is the floor the answer endpoints are measured
against.
"""

from __future__ import annotations

import msgspec
from litestar import Litestar, get

from serving.app import create_app_from_env

__all__ = ["CONSTANT_PATH", "Constant", "create_bench_app"]

CONSTANT_PATH = "/bench/constant"


class Constant(msgspec.Struct, frozen=True, kw_only=True):
    status: str = "ok"
    layer: str = "floor"


_CONSTANT = Constant()


def create_bench_app() -> Litestar:
    """The service from ``RAGC_*`` environment variables, with ``GET /bench/constant`` added."""
    app = create_app_from_env()

    @get(
        CONSTANT_PATH, operation_id="bench_constant", sync_to_thread=False, include_in_schema=False
    )
    def constant() -> Constant:
        return _CONSTANT

    app.register(constant)
    return app
