"""The Prometheus metric families of DESIGN.md, in a registry owned by one app instance.

With ``--processes N`` (``app.supervisor``), ``PROMETHEUS_MULTIPROC_DIR`` is set: prometheus-client
then keeps every series of every worker process in files there, and ``render()`` adds them up across
processes: counters and histograms summed, the queue depth summed over live processes, ``model_info``
the maximum over live processes (one series per model, 1 while any worker serves it).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.multiprocess import MultiProcessCollector

from app.batcher import BatchStats

__all__ = ["REJECTION_REASONS", "Metrics", "ModelInfoLabels", "ModelMetrics", "CONTENT_TYPE_LATEST"]

_LATENCY = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
#: The ``reason`` label values of ``resnet_serve_rejected_total`` (``app.errors``'s ``ServeError.reason``).
REJECTION_REASONS = (
    "queue_full",
    "bytes_budget",
    "deadline",
    "body_timeout",
    "too_large",
    "bad_image",
    "bad_request",
    "unauthorized",
    "disconnected",
)
_BATCH = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)


class Metrics:
    """All ``resnet_serve_*`` families; a fresh ``CollectorRegistry`` per instance."""

    def __init__(self) -> None:
        # prometheus-client's own switch (it reads the variable at import, and so does this check).
        self.multiprocess = "PROMETHEUS_MULTIPROC_DIR" in os.environ
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "resnet_serve_requests", "HTTP requests by route and status", ["route", "status"], registry=r
        )
        self.request_duration = Histogram(
            "resnet_serve_request_duration_seconds", "HTTP request latency", ["route"], buckets=_LATENCY, registry=r
        )
        self.images = Counter("resnet_serve_images", "images classified", ["model"], registry=r)
        self.queue_depth = Gauge(
            "resnet_serve_queue_depth",
            "requests waiting for a batch",
            ["model"],
            registry=r,
            multiprocess_mode="livesum",
        )
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
            ["model", "arch", "device", "precision", "variant", "batch_cap", "default", "version"],
            registry=r,
            multiprocess_mode="livemax",
        )
        self.profile_latency = Gauge(
            "resnet_serve_model_profile_latency_seconds",
            "one forward at this batch size, measured at warm-up",
            ["model", "batch_size"],
            registry=r,
            multiprocess_mode="livemax",
        )
        self.profile_throughput = Gauge(
            "resnet_serve_model_profile_images_per_second",
            "images per second of back-to-back forwards at this batch size, measured at warm-up",
            ["model", "batch_size"],
            registry=r,
            multiprocess_mode="livemax",
        )
        self.swaps = Counter(
            "resnet_serve_model_swaps",
            "versions switched in while serving, by kind (load, swap, rollback, unload)",
            ["model", "kind"],
            registry=r,
        )
        self.refusals = Counter(
            "resnet_serve_model_refusals",
            "checkpoints refused before taking traffic, by the check that failed (load, metadata, golden)",
            ["model", "check"],
            registry=r,
        )
        self.rejected = Counter("resnet_serve_rejected", "requests refused, by reason", ["reason"], registry=r)
        for reason in REJECTION_REASONS:  # every reason exported from the start, at 0
            self.rejected.labels(reason)
        self._owners: dict[str, ModelMetrics] = {}  # model -> the service whose gauges are published
        self._info: dict[str, tuple[str, ...]] = {}  # model -> its model_info label values
        self._profiles: dict[str, list[str]] = {}  # model -> the batch sizes of its published profile

    def reject(self, reason: str) -> None:
        """Count one request refused for ``reason`` (one of ``REJECTION_REASONS``)."""
        self.rejected.labels(reason).inc()

    def for_model(self, model: str) -> ModelMetrics:
        """The families' children labelled with ``model``, for the service that serves it."""
        return ModelMetrics(self, model)

    def publish(
        self, owner: ModelMetrics, info: tuple[str, ...], depth: Callable[[], int], profile: dict[int, float]
    ) -> None:
        """``owner`` now serves its model: its ``model_info`` and profile series replace the model's earlier ones.

        ``profile``: seconds of one forward per batch size (``Engine.warmup_ms``).
        """
        self.withdraw(self._owners.get(owner.model))
        self._owners[owner.model] = owner
        self._info[owner.model] = info
        self.model_info.labels(*info).set(1)
        self._profiles[owner.model] = [str(size) for size in profile]
        for size, seconds in profile.items():
            self.profile_latency.labels(owner.model, str(size)).set(seconds)
            self.profile_throughput.labels(owner.model, str(size)).set(size / seconds if seconds > 0 else 0.0)
        queue_depth = self.queue_depth.labels(owner.model)
        if self.multiprocess:  # a function cannot be read from another process: set as the depth changes
            owner.depth_gauge = queue_depth
            queue_depth.set(depth())
        else:
            queue_depth.set_function(depth)

    def withdraw(self, owner: ModelMetrics | None) -> None:
        """Remove the gauges ``owner`` published, if they are still its own (counters stay)."""
        if owner is None or self._owners.get(owner.model) is not owner:
            return
        del self._owners[owner.model]
        info = self._info.pop(owner.model)
        sizes = self._profiles.pop(owner.model, [])
        if self.multiprocess:  # a series cannot leave the shared files: 0 = not served (by this process)
            owner.depth_gauge = None
            self.model_info.labels(*info).set(0)
            self.queue_depth.labels(owner.model).set(0)
            for size in sizes:
                self.profile_latency.labels(owner.model, size).set(0)
                self.profile_throughput.labels(owner.model, size).set(0)
        else:
            self.model_info.remove(*info)
            self.queue_depth.remove(owner.model)
            for size in sizes:
                self.profile_latency.remove(owner.model, size)
                self.profile_throughput.remove(owner.model, size)

    def render(self) -> bytes:
        """The exposition text (prometheus-client's own encoder), of every process in multiprocess mode."""
        if self.multiprocess:
            registry = CollectorRegistry()
            MultiProcessCollector(registry)
            return generate_latest(registry)
        return generate_latest(self.registry)


class ModelMetrics:
    """The series of one model as one service serves it: bound once (no label lookups per request).

    Create it when the service starts serving (a checkpoint that never loads leaves no series). Its
    gauges (``model_info``, queue depth) belong to the service that published them last under the
    model's name, so a retiring version withdrawing its own never removes its successor's.
    """

    def __init__(self, metrics: Metrics, model: str) -> None:
        self._metrics = metrics
        self.model = model
        self._preprocess = metrics.preprocess.labels(model)
        self._batch_size = metrics.batch_size.labels(model)
        self._queue_wait = metrics.queue_wait.labels(model)
        self._inference = metrics.inference.labels(model)
        self._images = metrics.images.labels(model)
        self._info: tuple[str, ...] | None = None
        #: False while the service classifies only for its own checks (``ModelService.uncounted``): those
        #: images are not traffic, and are left out of every per-model series.
        self.counting = True
        #: Multiprocess mode, while this service's gauges are published: its queue-depth series (``depth_changed``).
        self.depth_gauge: Gauge | None = None

    def observe_batch(self, stats: BatchStats) -> None:
        """A ``Batcher`` ``on_batch`` hook: batch size, queue waits, inference time, images classified."""
        if not self.counting:
            return
        self._batch_size.observe(stats.size)
        for wait in stats.queue_waits_s:
            self._queue_wait.observe(wait)
        self._inference.observe(stats.inference_s)
        if stats.ok:
            self._images.inc(stats.size)

    def observe_preprocess(self, seconds: float) -> None:
        """Time one image took to decode and resize."""
        if self.counting:
            self._preprocess.observe(seconds)

    def depth_changed(self, depth: int) -> None:
        """A ``Batcher`` ``on_depth`` hook: in multiprocess mode, the queue depth is written as it changes."""
        if self.depth_gauge is not None:
            self.depth_gauge.set(depth)

    def publish(self, info: ModelInfoLabels, depth: Callable[[], int], profile: dict[int, float]) -> None:
        """Publish ``model_info`` (1 = serving) with these labels, ``depth()`` as the queue depth and the
        capacity profile (seconds of one forward per batch size).

        In multiprocess mode the depth is written when published and whenever it changes
        (``depth_changed``), not read at scrape time.
        """
        self._metrics.publish(self, (self.model, *info.values()), depth, profile)

    def withdraw(self) -> None:
        """Drop this service's ``model_info`` and queue depth, unless a successor has taken them over."""
        self._metrics.withdraw(self)


@dataclass(frozen=True)
class ModelInfoLabels:
    """The labels of ``model_info`` beside the model's name, in the family's order."""

    arch: str
    device: str
    precision: str
    variant: str
    batch_cap: int
    default: bool
    version: str

    def values(self) -> tuple[str, ...]:
        """Label values as strings."""
        return (
            self.arch,
            self.device,
            self.precision,
            self.variant,
            str(self.batch_cap),
            str(self.default),
            self.version,
        )
