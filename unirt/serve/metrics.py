"""What ``/metrics`` exposes (Prometheus text format), per model and backend.

Each app has a registry of its own, not prometheus-client's global one, so that two servers in
one process (tests, an embedding ASGI app) never count into each other.
"""

from __future__ import annotations

#: Seconds: a tiny model answers in well under a millisecond, a large one in seconds.
LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0,
                   10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


class Metrics:
    """Request counts, latencies, rows per engine call and queue depth."""

    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = CollectorRegistry()
        labels = ["model", "backend"]
        self.requests = Counter(
            "unirt_requests", "Infer requests answered, by HTTP status.",
            [*labels, "code"], registry=self.registry)
        self.latency = Histogram(
            "unirt_request_duration_seconds",
            "Infer request time in the server, from the first byte read to the response built.",
            labels, buckets=LATENCY_BUCKETS, registry=self.registry)
        self.engine_latency = Histogram(
            "unirt_engine_duration_seconds", "Time of one engine call (a whole batch).",
            labels, buckets=LATENCY_BUCKETS, registry=self.registry)
        self.batch_size = Histogram(
            "unirt_batch_size", "Rows (batch-axis size) per engine call; 1 per call for a model "
            "without a batch axis.", labels, buckets=BATCH_BUCKETS, registry=self.registry)
        self.queue_depth = Gauge(
            "unirt_queue_depth", "Infer requests decoded and waiting for or inside the engine.",
            labels, registry=self.registry)

    def render(self) -> tuple[bytes, str]:
        """The exposition text and its content type."""
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return generate_latest(self.registry), CONTENT_TYPE_LATEST
