"""The physical ceiling: the model alone, in process, with no HTTP, and the drift probe.

Three figures per batch size, all with the very code our service runs (``app.engine.Engine``):
``preprocess`` (decode + resize/crop + to-tensor of one image, single thread), ``forward``
(normalize + model + softmax of a ready uint8 batch) and ``together`` (preprocess the batch's images
one after another, stack, forward: what one server thread could do with no HTTP at all). The best
``together`` throughput over batch sizes is the ceiling a server on this hardware could reach; the
``together`` median at batch 1 is the single-image latency floor.

The probe re-measures, in a few seconds, the ceiling's best batch size and its batch-1 latency, so
served figures can be divided by the machine's speed of the same minutes.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch

from app.engine import Engine

__all__ = ["BatchPoint", "Ceiling", "Probe", "measure_ceiling", "probe", "timed"]


@dataclass
class BatchPoint:
    """In-process figures at one batch size (seconds are medians of the timed runs)."""

    batch_size: int
    forward_s: float
    together_s: float
    forward_images_per_s: float
    together_images_per_s: float
    runs: int


@dataclass
class Ceiling:
    """The ceiling sweep of one workload."""

    preprocess_ms: float
    preprocess_images_per_s: float
    points: list[BatchPoint]
    best_batch_size: int
    best_images_per_s: float
    latency_floor_ms: float

    def to_dict(self) -> dict[str, object]:
        """A JSON-ready dict."""
        return asdict(self)


@dataclass
class Probe:
    """A short in-process measurement: throughput at the best batch size and batch-1 latency."""

    at: float  # time.time() when it finished
    batch_size: int
    images_per_s: float
    latency_ms: float


def timed(fn: Callable[[], object], seconds: float, min_runs: int = 1, warmup: int = 1) -> list[float]:
    """Run ``fn`` ``warmup`` times untimed, then until ``seconds`` have passed (at least ``min_runs``)."""
    for _ in range(warmup):
        fn()
    durations: list[float] = []
    deadline = time.perf_counter() + seconds
    while len(durations) < min_runs or time.perf_counter() < deadline:
        start = time.perf_counter()
        fn()
        durations.append(time.perf_counter() - start)
    return durations


def _together(engine: Engine, image: bytes, batch_size: int) -> Callable[[], None]:
    def run() -> None:
        batch = torch.stack([engine.preprocess(image) for _ in range(batch_size)])
        engine.predict(batch).cpu()
        engine.synchronize()

    return run


def _forward(engine: Engine, batch: torch.Tensor) -> Callable[[], None]:
    def run() -> None:
        engine.predict(batch).cpu()
        engine.synchronize()

    return run


def measure_ceiling(
    model: Engine, image: bytes, batch_sizes: list[int], seconds: float = 3.0, log: Callable[[str], None] = print
) -> Ceiling:
    """Sweep ``batch_sizes``: preprocess alone, forward alone and both together, ``seconds`` each."""
    pre = timed(lambda: model.preprocess(image), seconds, min_runs=5, warmup=2)
    pre_s = statistics.median(pre)
    one = model.preprocess(image)
    log(f"  preprocess: {pre_s * 1000:.2f} ms/image")
    points = []
    for size in batch_sizes:
        batch = one.unsqueeze(0).expand(size, *one.shape).contiguous()
        fwd = statistics.median(timed(_forward(model, batch), seconds))
        runs = timed(_together(model, image, size), seconds)
        tog = statistics.median(runs)
        points.append(BatchPoint(size, fwd, tog, size / fwd, size / tog, len(runs)))
        log(f"  batch {size:3d}: forward {size / fwd:8.1f} img/s, with preprocessing {size / tog:8.1f} img/s")
    best = max(points, key=lambda p: p.together_images_per_s)
    floor = next((p.together_s for p in points if p.batch_size == 1), None)
    if floor is None:
        floor = statistics.median(timed(_together(model, image, 1), seconds))
    return Ceiling(
        preprocess_ms=pre_s * 1000,
        preprocess_images_per_s=1 / pre_s,
        points=points,
        best_batch_size=best.batch_size,
        best_images_per_s=best.together_images_per_s,
        latency_floor_ms=floor * 1000,
    )


def probe(model: Engine, image: bytes, batch_size: int, seconds: float = 2.5) -> Probe:
    """``seconds`` in all: throughput of ``together`` at ``batch_size`` (2/3), batch-1 latency (1/3)."""
    runs = timed(_together(model, image, batch_size), seconds * 2 / 3, warmup=1)
    singles = timed(_together(model, image, 1), seconds / 3, min_runs=3, warmup=1)
    return Probe(time.time(), batch_size, batch_size / statistics.median(runs), statistics.median(singles) * 1000)
