"""Liveness, readiness and Prometheus metrics."""

from __future__ import annotations

from litestar import Controller, MediaType, Response, get
from litestar.di import NamedDependency
from litestar.status_codes import HTTP_200_OK, HTTP_503_SERVICE_UNAVAILABLE

from serving.dto import Health
from serving.metrics import CONTENT_TYPE
from serving.service import AnswerService

__all__ = ["HealthController"]


class HealthController(Controller):
    """Probes for load balancers and Kubernetes, and the metrics endpoint."""

    tags = ["health"]  # noqa: RUF012 - Litestar reads it as a class attribute

    @get("/healthz", operation_id="healthz", sync_to_thread=False)
    def healthz(self) -> Health:
        """The process is up."""
        return Health(status="ok")

    @get("/readyz", operation_id="readyz", sync_to_thread=False)
    def readyz(self, service: NamedDependency[AnswerService]) -> Response[Health]:
        """Ready (200) while the active version is loaded; ``degraded`` (still 200: it answers)
        when the pointers cannot be read and the replica serves the versions it read last."""
        rollout = service.rollout
        degraded = service.pointers.degraded
        if not service.ready:
            status, detail = "not ready", "no active version loaded"
        elif degraded is not None:
            status, detail = "degraded", degraded
        else:
            status, detail = "ready", None
        return Response(
            Health(status=status, version=rollout.stable, canary=rollout.canary, detail=detail),
            status_code=HTTP_503_SERVICE_UNAVAILABLE if status == "not ready" else HTTP_200_OK,
        )

    @get("/metrics", operation_id="metrics", sync_to_thread=True, media_type=MediaType.TEXT)
    def metrics(self, service: NamedDependency[AnswerService]) -> Response[bytes]:
        """Prometheus metrics: answers and latency per layer, HTTP requests, misses, the active
        version, pointer health, process figures (of every worker, with several)."""
        return Response(  # the header as given: Litestar would add a second charset
            service.metrics.render(),
            media_type=MediaType.TEXT,
            headers={"content-type": CONTENT_TYPE},
        )
