"""``ModelService``: one model in service, and everything a request for it needs.

It owns its engine (the model on its device), its preprocessing, its batcher, its metric series, its
state and its version (the checkpoint file's content hash). A service is created, loaded and warmed
(``load``, blocking, in a loader thread), primed in the forward thread (``prime``), started
(``start``), and retired (``drain`` answers every request it admitted, then stops; ``stop`` fails
what is left): each on its own, so one version can be warmed beside another and swapped in.

A request holds ``admitted()`` from the moment it is routed to the service until it is answered, and
calls ``classify(data, top_k, deadline)`` for each image:

    bytes --decode/resize (inline when tiny, else a worker thread)--> uint8 tensor
          --batcher (queue, batch, forward thread)--> top-k predictions
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from enum import StrEnum
from functools import partial
from pathlib import Path
from typing import Any

from torch import Tensor

from app import request_log
from app.batcher import Batcher
from app.devices import ServingDevice, load_engine
from app.engine import Engine
from app.errors import NotReady
from app.executors import Executors
from app.metrics import Metrics, ModelInfoLabels, ModelMetrics
from app.preprocess import TINY_IMAGE_MAX_BYTES, open_image
from app.settings import Settings

__all__ = ["ModelService", "ModelState", "Predictions", "file_version"]

log = logging.getLogger("app.service")

#: Per image: ``{"label", "index", "score"}`` dicts, best first (``PredictResponse.predictions``).
Predictions = list[dict[str, Any]]


class ModelState(StrEnum):
    """Where a service is in its life: loading -> ready -> draining -> stopped; or failed."""

    LOADING = "loading"
    READY = "ready"
    DRAINING = "draining"
    STOPPED = "stopped"
    FAILED = "failed"


def file_version(path: Path) -> str:
    """The checkpoint's content hash: the first 16 hex digits of its SHA-256."""
    with path.open("rb") as file:
        return hashlib.file_digest(file, "sha256").hexdigest()[:16]


class ModelService:
    """A checkpoint served under its name: load it, start it, classify with it, retire it."""

    def __init__(
        self,
        name: str,
        path: Path,
        *,
        settings: Settings,
        device: ServingDevice,
        executors: Executors,
        metrics: Metrics,
    ) -> None:
        self.name = name
        self.path = path
        self.state = ModelState.LOADING
        self.failure: str | None = None
        self.version: str | None = None
        self.loaded_at: datetime | None = None
        self.load_s: float | None = None
        self.engine: Engine | None = None
        self._settings = settings
        self._device = device
        self._executors = executors
        self._all_metrics = metrics
        self._metrics: ModelMetrics | None = None
        self._batcher: Batcher[tuple[Tensor, int], Predictions] | None = None
        self._in_flight = 0
        self._idle = asyncio.Event()
        self._idle.set()

    def load(self) -> None:
        """Hash the file, load the weights, warm every batch size up (blocking: run it in a loader thread).

        Raises whatever loading raised, after recording it as the service's failure.
        """
        s = self._settings
        started = time.perf_counter()
        try:
            version = file_version(self.path)
            engine = load_engine(self.path, self._device, precision=s.precision, channels_last=s.channels_last)
            engine.warmup(s.max_batch_size, autotune=s.autotune_batch)
        except Exception as exc:
            self.fail(f"{type(exc).__name__}: {exc}")
            raise
        self.engine, self.version = engine, version
        self.load_s = round(time.perf_counter() - started, 3)
        self.loaded_at = datetime.now(UTC)

    def prime(self) -> None:
        """One forward per warm-up batch size, in the calling thread (the forward thread: see ``Engine.prime``)."""
        self._require_engine().prime()

    def start(self, *, default: bool) -> None:
        """Open the batcher (in the running event loop) and publish the model's metrics; state: ready."""
        if self.state is not ModelState.LOADING:
            raise RuntimeError(f"model {self.name!r} cannot start: it is {self.state}")
        engine, s = self._require_engine(), self._settings
        metrics = self._all_metrics.for_model(self.name)
        batcher: Batcher[tuple[Tensor, int], Predictions] = Batcher(
            engine.infer,
            max_batch_size=engine.batch_cap,
            max_wait_s=s.max_wait_ms / 1000,
            max_queue=s.max_queue,
            timeout_s=s.timeout_s,
            executor=self._executors.forward,
            on_batch=metrics.observe_batch,
            on_crash=self.fail,
            on_depth=metrics.depth_changed,
            name=self.name,
        )
        self._metrics, self._batcher = metrics, batcher
        batcher.start()
        self.state = ModelState.READY
        self.publish(default=default)
        log.info(
            "model ready",
            extra={
                "model": self.name,
                "version": self.version,
                "arch": engine.metadata.architecture.name,
                "device": engine.device_name,
                "precision": engine.precision,
                "batch_cap": engine.batch_cap,
                "warmup_ms": engine.warmup_ms,
                "load_s": self.load_s,
            },
        )

    def publish(self, *, default: bool) -> None:
        """(Re)publish ``model_info`` and the queue depth, e.g. when the default model changes."""
        engine, batcher, metrics = self._require_engine(), self._batcher, self._metrics
        if batcher is None or metrics is None:
            raise NotReady(f"model {self.name!r} is {self.state}")
        arch = engine.metadata.architecture.name
        labels = ModelInfoLabels(
            arch, engine.device_name, engine.precision, engine.batch_cap, default, self.version or ""
        )
        metrics.publish(labels, lambda: batcher.depth)

    @contextmanager
    def admitted(self) -> Iterator[None]:
        """Hold for a whole request: 503 unless serving; ``drain`` waits until every admitted one is done."""
        if self.state is not ModelState.READY:
            raise NotReady(f"model {self.name!r} is {self.state}")
        self._in_flight += 1
        self._idle.clear()
        try:
            yield
        finally:
            self._in_flight -= 1
            if not self._in_flight:
                self._idle.set()

    async def classify(self, data: bytes, top_k: int, deadline: float) -> Predictions:
        """Decode, resize, batch, infer: the top ``top_k`` classes of one image (``deadline``: monotonic)."""
        batcher, metrics = self._batcher, self._metrics
        if batcher is None or metrics is None or self.state not in (ModelState.READY, ModelState.DRAINING):
            raise NotReady(f"model {self.name!r} is {self.state}")
        started = time.perf_counter()
        image = await self._preprocess(data)
        elapsed = time.perf_counter() - started
        metrics.preprocess.observe(elapsed)
        request_log.current().record_preprocess(elapsed)
        return await batcher.submit((image, top_k), deadline=deadline)

    async def _preprocess(self, data: bytes) -> Tensor:
        """Bytes -> the model's uint8 input: tiny images on the event loop, the rest in the worker pool.

        An image of at most ``inline_decode_max_pixels`` (judged from its header; a body that small has its
        header parsed here) is decoded here: tens of microseconds, cheaper than the hop to a worker thread
        and back. Bad bytes found here get their 400 here.
        """
        engine, s = self._require_engine(), self._settings
        pool, loop = self._executors.preprocess, asyncio.get_running_loop()
        if s.inline_decode_max_pixels <= 0 or len(data) > TINY_IMAGE_MAX_BYTES:
            return await loop.run_in_executor(pool, partial(engine.preprocess, data, max_pixels=s.max_image_pixels))
        _, height, width = engine.input_shape
        if height * width <= s.inline_decode_max_pixels:
            tensor = engine.decode_plain_png(data, max_pixels=s.max_image_pixels)
            if tensor is not None:
                return tensor
        image = open_image(data, max_pixels=s.max_image_pixels)
        width, height = image.size
        if width * height <= s.inline_decode_max_pixels:
            return engine.decode(image)
        return await loop.run_in_executor(pool, engine.decode, image)

    async def drain(self) -> None:
        """Admit no new request, answer every admitted one, then stop (to retire a version)."""
        if self.state is ModelState.READY:
            self.state = ModelState.DRAINING
        await self._idle.wait()
        await self.stop()

    async def stop(self) -> None:
        """Stop the batcher (what is still queued fails with 500) and withdraw the model's gauges."""
        if self._batcher is not None:
            await self._batcher.stop()
            self._batcher = None
        if self._metrics is not None:
            self._metrics.withdraw()
        if self.state is not ModelState.FAILED:
            self.state = ModelState.STOPPED

    def fail(self, reason: str) -> None:
        """Record why this service cannot serve."""
        self.state, self.failure = ModelState.FAILED, reason
        log.error("model failed", extra={"model": self.name, "reason": reason})

    def _require_engine(self) -> Engine:
        if self.engine is None:
            raise NotReady(f"model {self.name!r} is {self.state}")
        return self.engine
