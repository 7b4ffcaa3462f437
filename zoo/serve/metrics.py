"""Prometheus metrics of one server: requests and latency by model and code, batch sizes, queue
depth, errors by code, clients that went away (not server errors; a registry of its own, so that
several apps in a process do not mix)."""
from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST


class Metrics:
    def __init__(self):
        self.registry = CollectorRegistry()
        self.requests = Counter("zoo_requests", "predictions answered", ["model", "code"], registry=self.registry)
        self.latency = Histogram("zoo_request_seconds", "prediction latency", ["model"], registry=self.registry,
                                 buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60))
        self.batches = Histogram("zoo_batch_size", "requests per network batch", ["model"], registry=self.registry,
                                 buckets=(1, 2, 4, 8, 16, 32, 64))
        self.queue = Gauge("zoo_queue_depth", "requests waiting", ["model"], registry=self.registry)
        self.errors = Counter("zoo_errors", "error answers", ["code"], registry=self.registry)
        self.disconnects = Counter("zoo_client_disconnects", "requests whose client went away before the answer "
                                   "(nginx's 499; not counted as errors)", registry=self.registry)

    def observe(self, model: str, seconds: float, code: int) -> None:
        self.requests.labels(model, str(code)).inc()
        self.latency.labels(model).observe(seconds)

    def batch(self, model: str, size: int) -> None:
        self.batches.labels(model).observe(size)

    def watch_queue(self, model: str, depth) -> None:
        self.queue.labels(model).set_function(depth)

    def error(self, code: int) -> None:
        self.errors.labels(str(code)).inc()

    def disconnect(self) -> None:
        self.disconnects.inc()

    def render(self) -> tuple[bytes, str]:
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
