"""The app ``bench/serve.py`` serves: the real answer service plus one constant route.

    granian --interface asgi --factory bench.serve_app:create_bench_app

``GET /bench/constant`` returns a small constant JSON body from a synchronous handler that runs
on the event loop: no body to decode, no dependency, no ladder. ``POST /bench/constant`` takes
the same JSON body as ``/v1/answer``, decodes it into the same request struct and returns the
constant: the framework's floor for a request of the answer's shape. Served by the same server
and the same Litestar app as ``/v1/answer``, they are the floors the answer endpoints are
measured against.
"""

from __future__ import annotations

import msgspec
from litestar import Litestar, get, post
from litestar.params import JSONBody

from serving.app import create_app_from_env
from serving.dto import AnswerRequest

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

    @post(
        CONSTANT_PATH,
        operation_id="bench_constant_post",
        sync_to_thread=False,
        include_in_schema=False,
        status_code=200,
    )
    def constant_post(data: JSONBody[AnswerRequest]) -> Constant:
        del data
        return _CONSTANT

    app.register(constant)
    app.register(constant_post)
    return app
