"""Prometheus metrics, in a registry of the app's own (two apps in one process do not collide).

With ``serve --workers N`` the workers share one view: the parent sets ``PROMETHEUS_MULTIPROC_DIR``
to a private folder before the workers start, each writes its values there (prometheus_client's
multiprocess mode), and ``/metrics`` of any worker sums them (gauges: over the live workers)."""

import os

from lmforge._optional import require

MULTIPROCESS_ENV = "PROMETHEUS_MULTIPROC_DIR"


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
        self.shared = bool(os.environ.get(MULTIPROCESS_ENV))
        live = {"multiprocess_mode": "livesum"} if self.shared else {}
        self.queue_depth = prom.Gauge("lmforge_queue_depth", "requests waiting", ["model"], registry=r, **live)
        self.in_flight = prom.Gauge("lmforge_in_flight", "requests being served", registry=r, **live)

    def batch(self, model: str, size: int) -> None:
        self.batch_size.labels(model).observe(size)

    def queue(self, model: str, depth: int) -> None:
        self.queue_depth.labels(model).set(depth)

    def render(self) -> tuple[bytes, str]:
        if self.shared:  # every worker's values, read from the shared folder
            registry = self.prom.CollectorRegistry()
            require("prometheus_client.multiprocess").MultiProcessCollector(registry)
            return self.prom.generate_latest(registry), self.prom.CONTENT_TYPE_LATEST
        return self.prom.generate_latest(self.registry), self.prom.CONTENT_TYPE_LATEST
