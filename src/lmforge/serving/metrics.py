"""Prometheus metrics, in a registry of the app's own (two apps in one process do not collide)."""

from lmforge._optional import require


class Metrics:
    def __init__(self):
        prom = require("prometheus_client", "lmforge[serve]", "the server's metrics")
        self.prom = prom
        self.registry = prom.CollectorRegistry()
        r = self.registry
        self.requests = prom.Counter(
            "lmforge_requests", "HTTP requests by route and status", ["route", "status"], registry=r
        )
        self.latency = prom.Histogram(
            "lmforge_request_seconds",
            "request latency by route, to the last byte",
            ["route"],
            registry=r,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
        )
        self.tokens_in = prom.Counter("lmforge_tokens_in", "prompt/input tokens", ["model"], registry=r)
        self.tokens_out = prom.Counter("lmforge_tokens_out", "generated tokens", ["model"], registry=r)
        self.batch_size = prom.Histogram(
            "lmforge_batch_size",
            "inputs or sequences run together",
            ["model"],
            registry=r,
            buckets=(1, 2, 4, 8, 16, 32, 64, 128),
        )
        self.queue_depth = prom.Gauge("lmforge_queue_depth", "requests waiting", ["model"], registry=r)
        self.in_flight = prom.Gauge("lmforge_in_flight", "requests being served", registry=r)

    def batch(self, model: str, size: int) -> None:
        self.batch_size.labels(model).observe(size)

    def queue(self, model: str, depth: int) -> None:
        self.queue_depth.labels(model).set(depth)

    def render(self) -> tuple[bytes, str]:
        return self.prom.generate_latest(self.registry), self.prom.CONTENT_TYPE_LATEST
