"""``ModelService``: one model in service, and everything a request for it needs.

It owns its engine (the model on its device), its preprocessing, its batcher, its metric series, its
state and its version (the checkpoint file's content hash). A service is created, loaded and warmed
(``load``, blocking, in the loader thread), started (``start``), and retired (``drain`` finishes what
is queued, ``stop`` fails it): each on its own, so one version can be warmed beside another and
swapped in. A request is ``classify(data, top_k, deadline)``:

    bytes --decode/resize (inline when tiny, else a worker thread)--> uint8 tensor
          --batcher (queue, batch, forward thread)--> top-k predictions
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from app import request_log
from app.batcher import Batcher
from app.engine import Engine
from app.errors import NotReady
from app.executors import Executors
from app.metrics import ModelInfoLabels, ModelMetrics
from app.preprocess import is_tiny_image
from app.settings import Settings

__all__ = ["ModelService", "ModelState", "Predictions"]

log = logging.getLogger("app.service")

#: Per image: ``{"label", "index", "score"}`` dicts, best first (``PredictResponse.predictions``).
Predictions = list[dict[str, Any]]


class ModelState(StrEnum):
    """Where a service is in its life."""

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
        device: torch.device,
        executors: Executors,
        metrics: ModelMetrics,
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
        self._metrics = metrics
        self._batcher: Batcher[tuple[Tensor, int], Predictions] | None = None

    def load(self) -> None:
        """Hash the file, load the weights, warm every batch size up (blocking: run it in the loader thread).

        Raises whatever loading raised, after recording it as the service's failure.
        """
        s = self._settings
        started = time.perf_counter()
        try:
            version = file_version(self.path)
            engine = Engine.load(self.path, device=self._device, precision=s.precision, channels_last=s.channels_last)
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
        engine, s = self._require_engine(), self._settings
        batcher: Batcher[tuple[Tensor, int], Predictions] = Batcher(
            engine.infer,
            max_batch_size=engine.batch_cap,
            max_wait_s=s.max_wait_ms / 1000,
            max_queue=s.max_queue,
            timeout_s=s.timeout_s,
            executor=self._executors.forward,
            on_batch=self._metrics.observe_batch,
            name=self.name,
        )
        batcher.start()
        self._batcher = batcher
        self._metrics.track_queue_depth(lambda: batcher.depth)
        self.publish(default=default)
        self.state = ModelState.READY
        log.info(
            "model ready",
            extra={
                "model": self.name,
                "version": self.version,
                "arch": engine.metadata.architecture.name,
                "device": str(engine.device),
                "precision": engine.precision,
                "batch_cap": engine.batch_cap,
                "warmup_ms": engine.warmup_ms,
                "load_s": self.load_s,
            },
        )

    def publish(self, *, default: bool) -> None:
        """(Re)publish ``model_info``, e.g. when the default model changes."""
        engine = self._require_engine()
        arch = engine.metadata.architecture.name
        labels = ModelInfoLabels(
            arch, str(engine.device), engine.precision, engine.batch_cap, default, self.version or ""
        )
        self._metrics.set_info(labels)

    async def classify(self, data: bytes, top_k: int, deadline: float) -> Predictions:
        """Decode, resize, batch, infer: the top ``top_k`` classes of one image (``deadline``: monotonic)."""
        batcher = self._batcher
        if batcher is None or self.state not in (ModelState.READY, ModelState.DRAINING):
            raise NotReady(f"model {self.name!r} is {self.state}")
        started = time.perf_counter()
        if is_tiny_image(data, self._settings.inline_decode_max_pixels):
            image = self._decode(data)  # tens of microseconds: cheaper than the hop to a worker and back
        else:
            image = await asyncio.get_running_loop().run_in_executor(self._executors.preprocess, self._decode, data)
        elapsed = time.perf_counter() - started
        self._metrics.preprocess.observe(elapsed)
        request_log.current().record_preprocess(elapsed)
        return await batcher.submit((image, top_k), deadline=deadline)

    def _decode(self, data: bytes) -> Tensor:
        return self._require_engine().preprocess(data, max_pixels=self._settings.max_image_pixels)

    async def drain(self) -> None:
        """Stop taking requests, answer every one already queued, then stop."""
        if self.state == ModelState.READY:
            self.state = ModelState.DRAINING
        if self._batcher is not None:
            await self._batcher.drain()
        await self.stop()

    async def stop(self) -> None:
        """Stop the batcher (what is still queued fails with 500) and withdraw the model's metrics."""
        if self._batcher is not None:
            await self._batcher.stop()
            self._batcher = None
        self._metrics.withdraw()
        if self.state != ModelState.FAILED:
            self.state = ModelState.STOPPED

    def fail(self, reason: str) -> None:
        """Record why this service cannot serve."""
        self.state, self.failure = ModelState.FAILED, reason

    def _require_engine(self) -> Engine:
        if self.engine is None:
            raise NotReady(f"model {self.name!r} is {self.state}")
        return self.engine
