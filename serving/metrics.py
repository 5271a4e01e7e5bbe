"""Prometheus metrics of the answer service (one registry per app)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

__all__ = ["Metrics"]

_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)


class Metrics:
    """Requests and latency per layer, misses, the active version, encoder batch sizes."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.answers = Counter(
            "ragc_answers", "Answers served, by layer.", ["layer"], registry=self.registry
        )
        self.latency = Histogram(
            "ragc_answer_latency_seconds",
            "Time to answer, by layer.",
            ["layer"],
            buckets=_BUCKETS,
            registry=self.registry,
        )
        self.misses = Counter(
            "ragc_misses", "Questions answered with the fallback.", registry=self.registry
        )
        self.active = Gauge(
            "ragc_active_version",
            "1 for the active (stable) version.",
            ["version"],
            registry=self.registry,
        )
        self.encoder_batch = Histogram(
            "ragc_encoder_batch_size",
            "Questions per call of the sentence encoder's batcher.",
            buckets=_BATCH_BUCKETS,
            registry=self.registry,
        )
        self.audit_dropped = Counter(
            "ragc_audit_dropped",
            "Audit events dropped because the audit queue was full (the audit log was down).",
            registry=self.registry,
        )
        self._active: str | None = None
        layers = ("L1", "L2", "L3", "SAFE")
        self._answers = {layer: self.answers.labels(layer) for layer in layers}
        self._latency = {layer: self.latency.labels(layer) for layer in layers}

    def observe(self, layer: str, seconds: float) -> None:
        self._answers[layer].inc()
        self._latency[layer].observe(seconds)
        if layer == "SAFE":
            self.misses.inc()

    def count_audit_dropped(self, count: int) -> None:
        self.audit_dropped.inc(count)

    def observe_batch(self, size: int) -> None:
        self.encoder_batch.observe(size)

    def set_active(self, version: str | None) -> None:
        if version == self._active:
            return
        if self._active is not None:
            self.active.remove(self._active)
        if version is not None:
            self.active.labels(version).set(1)
        self._active = version

    def render(self) -> bytes:
        return generate_latest(self.registry)
