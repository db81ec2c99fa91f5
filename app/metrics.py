"""The Prometheus metric families of DESIGN.md, in a registry owned by one app instance."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from app.batcher import BatchStats

__all__ = ["Metrics", "CONTENT_TYPE_LATEST"]

_LATENCY = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
_BATCH = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)


class Metrics:
    """All ``resnet_serve_*`` families; a fresh ``CollectorRegistry`` per instance."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "resnet_serve_requests", "HTTP requests by route and status", ["route", "status"], registry=r
        )
        self.request_duration = Histogram(
            "resnet_serve_request_duration_seconds", "HTTP request latency", ["route"], buckets=_LATENCY, registry=r
        )
        self.images = Counter("resnet_serve_images", "images classified", ["model"], registry=r)
        self.queue_depth = Gauge("resnet_serve_queue_depth", "requests waiting for a batch", ["model"], registry=r)
        self.batch_size = Histogram(
            "resnet_serve_batch_size", "images per forward pass", ["model"], buckets=_BATCH, registry=r
        )
        self.queue_wait = Histogram(
            "resnet_serve_queue_wait_seconds",
            "time from queueing to the forward",
            ["model"],
            buckets=_LATENCY,
            registry=r,
        )
        self.preprocess = Histogram(
            "resnet_serve_preprocess_seconds", "decode and resize per image", ["model"], buckets=_LATENCY, registry=r
        )
        self.inference = Histogram(
            "resnet_serve_inference_seconds", "forward pass per batch", ["model"], buckets=_LATENCY, registry=r
        )
        self.model_info = Gauge(
            "resnet_serve_model_info",
            "loaded models (1 = serving)",
            ["model", "arch", "device", "precision", "batch_cap", "default"],
            registry=r,
        )

    def batch_observer(self, model: str):
        """A ``Batcher`` ``on_batch`` hook recording batch size, queue waits, inference time, images."""
        batch_size = self.batch_size.labels(model)
        queue_wait = self.queue_wait.labels(model)
        inference = self.inference.labels(model)
        images = self.images.labels(model)

        def observe(stats: BatchStats) -> None:
            batch_size.observe(stats.size)
            for wait in stats.queue_waits_s:
                queue_wait.observe(wait)
            inference.observe(stats.inference_s)
            if stats.ok:
                images.inc(stats.size)

        return observe

    def render(self) -> bytes:
        """The exposition text (prometheus-client's own encoder)."""
        return generate_latest(self.registry)
