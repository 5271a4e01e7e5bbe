"""Prometheus metrics of the answer service.

One process: the metrics live in the app's own registry, with the process collector's
``process_*`` series. Several workers (``ragc serve --workers N``, or any server started with
``PROMETHEUS_MULTIPROC_DIR`` set): prometheus_client's multiprocess mode. Every worker writes
its samples to files in that folder and a scrape, whichever worker serves it, sums the counters
and histograms of all of them (a dead worker's counts included), so successive scrapes no longer
alternate between workers; gauges say how they combine (``livemax``: over live workers), and each
live worker's process figures carry its ``pid``.
"""

from __future__ import annotations

import functools
import logging
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Final

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    generate_latest,
    multiprocess,
    values,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

__all__ = ["CONTENT_TYPE", "MULTIPROC_ENV", "Metrics", "WorkerProcesses"]

CONTENT_TYPE: Final = "text/plain; version=0.0.4; charset=utf-8"
"""The text format :func:`prometheus_client.generate_latest` writes, its charset named once."""
MULTIPROC_ENV: Final = "PROMETHEUS_MULTIPROC_DIR"

_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)
_LAYERS: Final = ("L1", "L2", "L3", "SAFE")
_PID_FILE: Final = re.compile(r"_(\d+)\.db$")

logger = logging.getLogger(__name__)


class WorkerProcesses(Collector):
    """``process_*`` series of every live worker that wrote to the multiprocess folder, each
    with its ``pid`` (prometheus_client's process collector covers only its own process)."""

    def __init__(self, folder: str) -> None:
        self.folder = Path(folder)

    def live_pids(self) -> list[int]:
        """Workers with files in the folder that are still running; the live-gauge files of
        those that are not (a worker that died and was replaced) are removed."""
        found = {int(m[1]) for p in self.folder.glob("*.db") if (m := _PID_FILE.search(p.name))}
        live = sorted(pid for pid in found if Path(f"/proc/{pid}").exists())
        for pid in found.difference(live):
            multiprocess.mark_process_dead(pid, str(self.folder))  # type: ignore[no-untyped-call]
        return live

    def collect(self) -> Iterator[Metric]:
        families: dict[str, GaugeMetricFamily] = {}
        for pid in self.live_pids():
            collector = ProcessCollector(pid=functools.partial(int, pid), registry=None)
            for metric in collector.collect():
                family = families.setdefault(
                    metric.name,
                    GaugeMetricFamily(metric.name, metric.documentation, labels=["pid"]),
                )
                for sample in metric.samples:
                    family.add_metric([str(pid)], sample.value)
        yield from families.values()


class Metrics:
    """Answers and latency per layer, misses, HTTP requests, the active version, pointer
    health, encoder batch sizes and dropped audit events."""

    def __init__(self) -> None:
        self.multiprocess_dir = os.environ.get(MULTIPROC_ENV) or None
        if self.multiprocess_dir is not None and values.ValueClass.__name__ != "MmapedValue":
            # prometheus_client was imported before the variable was set: samples stay in
            # this process, so render them from here.
            logger.warning(
                "%s is set but prometheus_client was imported before it was: metrics are "
                "this worker's own",
                MULTIPROC_ENV,
            )
            self.multiprocess_dir = None
        self.registry = CollectorRegistry()
        registry = self.registry
        self.answers = Counter(
            "ragc_answers", "Answers served, by layer.", ["layer"], registry=registry
        )
        self.latency = Histogram(
            "ragc_answer_latency_seconds",
            "Time to answer, by layer.",
            ["layer"],
            buckets=_BUCKETS,
            registry=registry,
        )
        self.misses = Counter(
            "ragc_misses", "Questions answered with the fallback.", registry=registry
        )
        self.http_requests = Counter(
            "ragc_http_requests",
            "HTTP requests, by method, route and status.",
            ["method", "route", "status"],
            registry=registry,
        )
        self.http_latency = Histogram(
            "ragc_http_request_duration_seconds",
            "Time from a request's arrival to its response's end, by route.",
            ["route"],
            buckets=_BUCKETS,
            registry=registry,
        )
        self.active = Gauge(
            "ragc_active_version",
            "1 for the active (stable) version, 0 for one that was.",
            ["version"],
            multiprocess_mode="livemax",
            registry=registry,
        )
        self.degraded = Gauge(
            "ragc_pointers_degraded",
            "1 while a replica serves from its last known pointers (the store is unreadable or "
            "lost them).",
            multiprocess_mode="livemax",
            registry=registry,
        )
        self.encoder_batch = Histogram(
            "ragc_encoder_batch_size",
            "Questions per call of the sentence encoder's batcher.",
            buckets=_BATCH_BUCKETS,
            registry=registry,
        )
        self.audit_dropped = Counter(
            "ragc_audit_dropped",
            "Audit events dropped because the audit queue was full (the audit log was down).",
            registry=registry,
        )
        if self.multiprocess_dir is None:
            ProcessCollector(registry=registry)
        self._active: str | None = None
        self._answers = {layer: self.answers.labels(layer) for layer in _LAYERS}
        self._latency = {layer: self.latency.labels(layer) for layer in _LAYERS}
        self._http: dict[tuple[str, str, int], Counter] = {}
        self._http_latency: dict[str, Histogram] = {}

    def observe(self, layer: str, seconds: float) -> None:
        self._answers[layer].inc()
        self._latency[layer].observe(seconds)
        if layer == "SAFE":
            self.misses.inc()

    def observe_http(self, method: str, route: str, status: int, seconds: float) -> None:
        """One HTTP request (children are cached: the labels repeat)."""
        key = (method, route, status)
        counter = self._http.get(key)
        if counter is None:
            counter = self._http.setdefault(key, self.http_requests.labels(method, route, status))
        counter.inc()
        histogram = self._http_latency.get(route)
        if histogram is None:
            histogram = self._http_latency.setdefault(route, self.http_latency.labels(route))
        histogram.observe(seconds)

    def count_audit_dropped(self, count: int) -> None:
        self.audit_dropped.inc(count)

    def observe_batch(self, size: int) -> None:
        self.encoder_batch.observe(size)

    def set_degraded(self, degraded: bool) -> None:
        self.degraded.set(1 if degraded else 0)

    def set_active(self, version: str | None) -> None:
        if version == self._active:
            return
        if self._active is not None:  # 0, not removed: other workers' files keep the series
            self.active.labels(self._active).set(0)
        if version is not None:
            self.active.labels(version).set(1)
        self._active = version

    def render(self) -> bytes:
        """The exposition text: this process's registry, or every worker's samples."""
        if self.multiprocess_dir is None:
            return generate_latest(self.registry)
        workers = WorkerProcesses(self.multiprocess_dir)
        workers.live_pids()  # first: a dead worker's live gauges must not be summed
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(  # type: ignore[no-untyped-call]
            registry, path=self.multiprocess_dir
        )
        registry.register(workers)
        return generate_latest(registry)
