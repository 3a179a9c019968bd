"""Prometheus metrics: requests by route, batch and job outcomes, pending cleanup, the
vacuum and the stores' bytes on disk; GET /metrics."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from typing import Any

import structlog
from flask import Blueprint, Flask, Response, current_app, g, request
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from ..config import Settings
from ..db import DatabaseUnavailable
from ..logs import route_template
from ..services.cleanup import pending_cleanup_count
from ..services.deletion import BatchOutcome
from ..services.jobs import count_by_status
from ..services.stores import Stores
from ..services.vacuum import VacuumStep
from ..vectors.base import SPACES, VectorStoreError
from .context import stores

# Set by gunicorn.conf.py before any worker imports prometheus_client: every worker then
# writes its samples to files there and a scrape of any worker adds them all up.
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
EXTENSION = "wickson_metrics"

# Labels take only values from a fixed set: an unknown method or an unmatched path must not
# grow a new time series per request.
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
UNMATCHED_ROUTE = "<unmatched>"
_BATCH_SIZE_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000)
_SECONDS_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_VACUUM_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)

log = structlog.get_logger("wickson_batch")
bp = Blueprint("metrics", __name__)


class Metrics:
    """The metrics of one app, registered in its own registry (one app per process in prod)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.requests = Counter(
            "wickson_http_requests",
            "HTTP requests answered, by route template, method and status",
            ["route", "method", "status"],
            registry=registry,
        )
        self.request_seconds = Histogram(
            "wickson_http_request_duration_seconds",
            "Time to answer an HTTP request, by route template",
            ["route"],
            buckets=_SECONDS_BUCKETS,
            registry=registry,
        )
        self.batch_size = Histogram(
            "wickson_batch_size",
            "Unique media ids per processed batch deletion",
            buckets=_BATCH_SIZE_BUCKETS,
            registry=registry,
        )
        self.batch_seconds = Histogram(
            "wickson_batch_processing_seconds",
            "Processing time of a batch deletion (the processing_time_ms it reports)",
            buckets=_SECONDS_BUCKETS,
            registry=registry,
        )
        self.media_deleted = Counter(
            "wickson_media_deleted",
            "Media records deleted by batch deletions",
            registry=registry,
        )
        self.vectors_deleted = Counter(
            "wickson_vectors_deleted",
            "Vector points removed by batch deletions, by space "
            "(points left to the reconciler are not counted here)",
            ["space"],
            registry=registry,
        )
        self.failures = Counter(
            "wickson_batch_failures",
            "Ids a batch deletion reported failed, by reason code",
            ["reason"],
            registry=registry,
        )
        self.cleanup_deferred = Counter(
            "wickson_cleanup_deferred",
            "Deleted media whose vectors could not be removed at once (left to the reconciler)",
            registry=registry,
        )
        self.ratelimit_storage_errors = Counter(
            "wickson_ratelimit_storage_errors",
            "Times a worker found the rate-limit storage unavailable and fell back to "
            "in-memory limits",
            registry=registry,
        )
        self.ratelimit_degraded = Gauge(
            "wickson_ratelimit_degraded",
            "Workers serving rate limits from their own memory (storage unavailable)",
            registry=registry,
            multiprocess_mode="livesum",
        )
        self.job_media_deleted = Counter(
            "wickson_job_media_deleted",
            "Media records deleted by deletion jobs",
            registry=registry,
        )
        self.job_media_failed = Counter(
            "wickson_job_media_failed",
            "Manifest ids of deletion jobs reported failed (NOT_FOUND)",
            registry=registry,
        )
        self.job_chunk_seconds = Histogram(
            "wickson_job_chunk_seconds",
            "Time to delete one chunk of a deletion job (its decision and its points)",
            buckets=_SECONDS_BUCKETS,
            registry=registry,
        )
        self.job_throughput = Gauge(
            "wickson_job_throughput_media_per_second",
            "Media per second of the chunk each job runner finished last, throttling included "
            "(0 when idle)",
            registry=registry,
            multiprocess_mode="livesum",
        )
        self.vacuum_runs = Counter(
            "wickson_vacuum_runs",
            "Vacuums of a space of the embedded vector store (deleted points rewritten out)",
            ["space"],
            registry=registry,
        )
        self.vacuum_seconds = Histogram(
            "wickson_vacuum_duration_seconds",
            "Time one vacuum of a space took (the engine holds the process meanwhile)",
            ["space"],
            buckets=_VACUUM_BUCKETS,
            registry=registry,
        )
        for space in SPACES:  # present from the first scrape, at 0
            self.vectors_deleted.labels(space=space)
            self.vacuum_runs.labels(space=space)

    def observe_batch(self, outcome: BatchOutcome) -> None:
        """Count one processed batch deletion."""
        self.batch_size.observe(len(outcome.deleted) + len(outcome.failed))
        self.batch_seconds.observe(outcome.processing_time_ms / 1000)
        self.media_deleted.inc(len(outcome.deleted))
        for space in SPACES:
            self.vectors_deleted.labels(space=space).inc(outcome.vectors_removed[space])
        for reason in outcome.failed.values():
            self.failures.labels(reason=reason).inc()
        self.cleanup_deferred.inc(len(outcome.cleanup_pending))

    def observe_chunk(
        self, job_id: str, outcome: BatchOutcome | None, work: float, cycle: float
    ) -> None:
        """Count a chunk a deletion job finished: `work` seconds, `cycle` with its throttle.

        None: the runner's job ended; its throughput is 0 until the next chunk.
        """
        del job_id  # not a label: one series per job would grow without bound
        if outcome is None:
            self.job_throughput.set(0)
            return
        done = len(outcome.deleted) + len(outcome.failed)
        self.job_media_deleted.inc(len(outcome.deleted))
        self.job_media_failed.inc(len(outcome.failed))
        self.job_chunk_seconds.observe(work)
        self.job_throughput.set(done / cycle if cycle > 0 else 0)

    def observe_vacuum(self, step: VacuumStep) -> None:
        """Count one vacuum step."""
        self.vacuum_runs.labels(space=step.space).inc()
        self.vacuum_seconds.labels(space=step.space).observe(step.seconds)

    def observe_request(self, route: str, method: str, status: int, seconds: float) -> None:
        """Count one answered HTTP request."""
        method = method if method in _METHODS else "OTHER"
        self.requests.labels(route=route, method=method, status=str(status)).inc()
        self.request_seconds.labels(route=route).observe(seconds)


class PendingCleanupCollector(Collector):
    """Reads the number of waiting cleanup tasks from the database at scrape time."""

    def __init__(self, held: Stores) -> None:
        self.held = held

    def collect(self) -> Iterator[GaugeMetricFamily]:
        try:
            pending = pending_cleanup_count(self.held.db)
        except DatabaseUnavailable as error:  # a scrape must still answer; the gauge is left out
            log.warning("metrics.cleanup_pending_unavailable", error=str(error))
            return
        yield GaugeMetricFamily(
            "wickson_cleanup_tasks_pending",
            "Vector cleanup tasks waiting for the reconciler (read from the database)",
            value=pending,
        )

    def describe(self) -> list[Any]:
        return []  # no query at registration time


class JobsCollector(Collector):
    """Reads the number of deletion jobs in each status from the database at scrape time."""

    def __init__(self, held: Stores) -> None:
        self.held = held

    def collect(self) -> Iterator[GaugeMetricFamily]:
        try:
            counts = count_by_status(self.held.db)
        except DatabaseUnavailable as error:
            log.warning("metrics.jobs_unavailable", error=str(error))
            return
        family = GaugeMetricFamily(
            "wickson_deletion_jobs",
            "Deletion jobs by status (read from the database)",
            labels=["status"],
        )
        for status, count in counts.items():
            family.add_metric([status], count)
        yield family

    def describe(self) -> list[Any]:
        return []


class StorageCollector(Collector):
    """Reads, at scrape time, the points awaiting a vacuum and each store's bytes on disk."""

    def __init__(self, held: Stores) -> None:
        self.held = held

    def collect(self) -> Iterator[GaugeMetricFamily]:
        pending = GaugeMetricFamily(
            "wickson_vacuum_points_pending",
            "Points deleted but still in the embedded vector store's files, by space "
            "(absent on a Qdrant server, which vacuums itself)",
            labels=["space"],
        )
        try:
            for space in SPACES:
                points = self.held.vectors.deleted_points(space)
                if points is not None:
                    pending.add_metric([space], points.deleted)
        except VectorStoreError as error:
            log.warning("metrics.vacuum_pending_unavailable", error=str(error))
        yield pending
        stored = GaugeMetricFamily(
            "wickson_store_bytes",
            "Bytes on this machine's disk: the embedded vector store (`vectors`), the SQLite "
            "file (`sqlite`) and its write-ahead log (`sqlite_wal`)",
            labels=["store"],
        )
        vectors = self.held.vectors.disk_bytes()
        if vectors is not None:
            stored.add_metric(["vectors"], vectors)
        for name, size in (self.held.db.disk_bytes() or {}).items():
            stored.add_metric([name], size)
        yield stored

    def describe(self) -> list[Any]:
        return []  # nothing is read at registration time


def multiprocess_mode() -> bool:
    """Return whether samples are shared between processes through PROMETHEUS_MULTIPROC_DIR."""
    return bool(os.environ.get(MULTIPROC_ENV))


def observe_batch(outcome: BatchOutcome) -> None:
    """Count a processed batch deletion in the current app's metrics."""
    metrics: Metrics = current_app.extensions[EXTENSION]
    metrics.observe_batch(outcome)


def _start_timer() -> None:
    g.metrics_started = time.perf_counter()


def _count_request(response: Response) -> Response:
    started = g.get("metrics_started")
    seconds = time.perf_counter() - started if started is not None else 0.0
    route = route_template(request.url_rule.rule) if request.url_rule else UNMATCHED_ROUTE
    metrics: Metrics = current_app.extensions[EXTENSION]
    metrics.observe_request(route, request.method, response.status_code, seconds)
    return response


def _scrape_registry() -> CollectorRegistry:
    if not multiprocess_mode():
        metrics: Metrics = current_app.extensions[EXTENSION]
        return metrics.registry
    # Under gunicorn every worker's samples are in files: add them all up, per scrape.
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    registry.register(PendingCleanupCollector(stores()))
    registry.register(JobsCollector(stores()))
    registry.register(StorageCollector(stores()))
    return registry


@bp.route("/metrics", methods=["GET"])
def scrape() -> Response:
    """Serve every metric in the Prometheus text format."""
    return Response(generate_latest(_scrape_registry()), content_type=CONTENT_TYPE_LATEST)


def init_app(app: Flask, settings: Settings, held: Stores) -> None:
    """Create this app's metrics, count every request, and serve GET /metrics (if enabled)."""
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    app.extensions[EXTENSION] = metrics
    held.chunk_observers.append(metrics.observe_chunk)
    held.vacuum_observers.append(metrics.observe_vacuum)
    if not multiprocess_mode():
        registry.register(PendingCleanupCollector(held))
        registry.register(JobsCollector(held))
        registry.register(StorageCollector(held))
    app.before_request(_start_timer)
    app.after_request(_count_request)
    if settings.metrics_enabled:
        app.register_blueprint(bp)
