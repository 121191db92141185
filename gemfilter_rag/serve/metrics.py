"""Prometheus metrics of the service (``GET /metrics``), in a registry of its own per app."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

ERROR_KINDS = (
    "bad_json",
    "validation",
    "too_large",
    "queue_full",
    "shutting_down",
    "client_disconnected",
    "no_cache",
    "internal",
)
BATCH_BUCKETS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128)
ROUTES = ("/v1/compress", "/v1/rerank", "/v2/rerank", "/rerank", "/v1/warm")
CACHE_GAUGES = {
    "hits": "Chunk-cache lookups answered (memory or file)",
    "misses": "Chunk-cache lookups that had to encode the chunk",
    "entries": "Chunk-cache entries in memory",
    "bytes": "Chunk-cache bytes in memory",
}
SECONDS_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 40, 80, 160)


class ServeMetrics:
    """Requests and errors by route, batch sizes, queue wait and compute seconds, tokens in and out, queue depth."""

    def __init__(
        self,
        queue_depth: Callable[[], float],
        in_flight: Callable[[], float],
        cache_stats: Callable[[], dict[str, Any]] | None = None,
    ) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "gemfilter_requests", "Requests by route and HTTP status", ["route", "status"], registry=r
        )
        self.errors = Counter("gemfilter_errors", "Failed requests by route and kind", ["route", "kind"], registry=r)
        for route in ROUTES:
            for kind in ERROR_KINDS:
                self.errors.labels(route, kind)
        self.batch_size = Histogram(
            "gemfilter_batch_size", "Requests per batched model pass", buckets=BATCH_BUCKETS, registry=r
        )
        self.queue_wait = Histogram(
            "gemfilter_queue_wait_seconds",
            "Seconds a request waited for its batch",
            buckets=SECONDS_BUCKETS,
            registry=r,
        )
        self.compute = Histogram(
            "gemfilter_compute_seconds", "Seconds of one batch in the model thread", buckets=SECONDS_BUCKETS, registry=r
        )
        self.latency = Histogram(
            "gemfilter_request_seconds",
            "Seconds from a request's arrival to its answer, by route (200 only)",
            ["route"],
            buckets=SECONDS_BUCKETS,
            registry=r,
        )
        self.tokens_in = Counter("gemfilter_context_tokens", "Context tokens received (200 only)", registry=r)
        self.tokens_out = Counter("gemfilter_kept_tokens", "Context tokens kept (200 only)", registry=r)
        Gauge("gemfilter_queue_depth", "Requests waiting for the model", registry=r).set_function(queue_depth)
        Gauge("gemfilter_in_flight", "Requests received and not yet answered", registry=r).set_function(in_flight)
        if cache_stats is not None:  # the chunk cache's counters, read when scraped
            for name, doc in CACHE_GAUGES.items():
                gauge = Gauge(f"gemfilter_chunk_cache_{name}", doc, registry=r)
                gauge.set_function(lambda name=name: float(cache_stats()[name]))  # type: ignore[misc]

    def render(self) -> bytes:
        """The Prometheus text exposition of every metric."""
        return generate_latest(self.registry)
