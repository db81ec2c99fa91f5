"""``ModelService``: one model in service, and everything a request for it needs.

It owns its engine (the model on its device), its preprocessing, its batcher, its metric series, its
state and its version (the checkpoint file's content hash). A service is created, loaded and warmed
(``load``, blocking, in a loader thread), primed in the forward thread (``prime``), started
(``start``), and retired (``drain`` answers every request it admitted, then stops; ``stop`` fails
what is left): each on its own, so one version can be warmed beside another and swapped in.

A request holds ``admitted()`` from the moment it is routed to the service until it is answered, and
calls ``classify(images, top_k, deadline, lease)`` with its images' bytes:

    reserve a queue slot per image (503 when there are not enough)
    bytes --decode/resize (inline when tiny, else a worker thread)--> uint8 tensor; bytes released
          --batcher (queue, batch, forward thread)--> top-k predictions

``classify_pixels`` takes images already decoded to the model's input (the v2 protocol's tensors) straight
to the queue slots and the batcher.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Coroutine, Iterable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any, TypeVar

from torch import Tensor

from app import request_log
from app.admission import BodyLease
from app.batcher import Batcher, Slots
from app.devices import ServingDevice, load_engine
from app.engine import Engine
from app.errors import DeadlineExceeded, NotReady, Overloaded
from app.executors import Executors
from app.image_header import peek_header
from app.metrics import Metrics, ModelInfoLabels, ModelMetrics
from app.optimize import optimize_engine
from app.preprocess import PixelBudget
from app.settings import Settings
from app.simulated import SimulatedDevice
from models import GoldenSet, read_golden

__all__ = ["ModelService", "ModelState", "Predictions", "file_version"]

T = TypeVar("T")

log = logging.getLogger("app.service")

#: Largest upload the event loop decodes itself (a tiny image of any format fits; see ``_preprocess``).
INLINE_MAX_BYTES = 16 * 1024

#: Per image: ``{"label", "index", "score"}`` dicts, best first (``PredictResponse.predictions``).
Predictions = list[dict[str, Any]]


class ModelState(StrEnum):
    """Where a service is in its life: loading -> ready -> draining -> stopped; or failed."""

    LOADING = "loading"
    READY = "ready"
    DRAINING = "draining"
    STOPPED = "stopped"
    FAILED = "failed"


async def _all(jobs: Iterable[Coroutine[Any, Any, T]]) -> list[T]:
    """Run ``jobs`` concurrently, results in order; the first that fails fails all and cancels the rest."""
    try:
        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(job) for job in jobs]
    except BaseExceptionGroup as failed:
        raise failed.exceptions[0] from None
    return [task.result() for task in tasks]


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
        self.golden: GoldenSet | None = None  # the checkpoint's golden images, read with its weights
        self._settings = settings
        self._device = device
        self._executors = executors
        self._all_metrics = metrics
        self._metrics: ModelMetrics | None = None
        self._batcher: Batcher[tuple[Tensor, int], Predictions] | None = None
        self._in_flight = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self._limits = settings.decode_limits

    def load(self) -> None:
        """Hash the file, load the weights, warm every batch size up (blocking: run it in a loader thread).

        Raises whatever loading raised, after recording it as the service's failure.
        """
        s = self._settings
        started = time.perf_counter()
        try:
            version = file_version(self.path)
            optimize = s.optimize != "off" and not isinstance(self._device, SimulatedDevice)
            precision = "fp32" if optimize else s.precision  # variants start from, and are checked against, fp32
            engine = load_engine(self.path, self._device, precision=precision, channels_last=s.channels_last)
            if optimize:
                optimize_engine(
                    engine,
                    mode=s.optimize,
                    version=version,
                    min_agreement=s.min_agreement,
                    max_batch_size=s.max_batch_size,
                    threads=s.torch_threads,
                    cache_dir=s.optimize_cache,
                )
            engine.warmup(s.max_batch_size, autotune=s.autotune_batch)
            golden = read_golden(self.path)
        except Exception as exc:
            self.fail(f"{type(exc).__name__}: {exc}")
            raise
        self.engine, self.version, self.golden = engine, version, golden
        self.load_s = round(time.perf_counter() - started, 3)
        self.loaded_at = datetime.now(UTC)

    def reuse(self, retired: ModelService) -> None:
        """Serve ``retired``'s engine (already loaded and warm) instead of loading the file (a rollback)."""
        if retired.engine is None:
            raise NotReady(f"model {self.name!r}: the retired version has no engine")
        self.engine, self.version, self.golden = retired.engine, retired.version, retired.golden
        self.load_s, self.loaded_at = 0.0, datetime.now(UTC)

    def prime_sizes(self) -> list[int]:
        """The batch sizes to prime in the forward thread, one ``prime(size)`` each."""
        return self._require_engine().prime_sizes()

    def prime(self, size: int) -> None:
        """One forward at batch size ``size``, in the calling thread (the forward thread: see ``Engine.prime``)."""
        self._require_engine().prime(size)

    def start(self, *, default: bool, publish: bool = True) -> None:
        """Open the batcher (in the running event loop) and publish the model's metrics; state: ready.

        A candidate version starts unpublished (``publish=False``): it can classify (its checks do) while
        the version it may replace still owns the model's gauges; ``publish`` when it is switched in.
        """
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
        if publish:
            self.publish(default=default)
        log.info(
            "model ready",
            extra={
                "model": self.name,
                "version": self.version,
                "arch": engine.metadata.architecture.name,
                "device": engine.device_name,
                "precision": engine.precision,
                "variant": engine.variant,
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
            arch, engine.device_name, engine.precision, engine.variant, engine.batch_cap, default, self.version or ""
        )
        profile = {size: ms / 1000 for size, ms in engine.warmup_ms.items()}
        metrics.publish(labels, lambda: batcher.depth, profile)

    @contextmanager
    def uncounted(self) -> Iterator[None]:
        """Classify for the service's own checks: nothing observed meanwhile counts in the model's metrics.

        Only for a version no request is routed to (a candidate, or the previous version before a rollback).
        """
        metrics = self._metrics
        if metrics is None:
            raise NotReady(f"model {self.name!r} is {self.state}")
        metrics.counting = False
        try:
            yield
        finally:
            metrics.counting = True

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

    @property
    def max_queue(self) -> int:
        """Images this service queues at most (``--max-queue``)."""
        return self._settings.max_queue

    def check_capacity(self) -> None:
        """503 now, before the body is read, when the model's queue has no slot left."""
        if self._batcher is not None and self._batcher.full:
            raise Overloaded(f"model {self.name!r} has {self._batcher.max_queue} requests queued; retry later")

    async def classify(
        self, images: list[bytes], top_k: int, deadline: float, lease: BodyLease | None = None
    ) -> list[Predictions]:
        """The top ``top_k`` classes of each image, in order (``deadline``: a ``time.monotonic()`` instant).

        Takes the bytes out of ``images`` (the list is emptied) so that each image's bytes are dropped, and
        given back to ``lease``, as soon as it is decoded. A queue slot for every image is reserved before
        any is decoded (503 when there are not enough); the images' decoded pixels are spent from one
        ``PixelBudget`` (413 beyond ``--max-request-pixels``). The first image that fails fails the request
        and cancels the rest.
        """
        batcher = self._serving_batcher()
        budget = PixelBudget(self._settings.max_request_pixels)
        uploads = images[:]
        images.clear()
        with batcher.reserve(len(uploads)) as slots:
            if len(uploads) == 1:
                return [await self._classify_one(uploads.pop(), top_k, deadline, lease, budget, slots)]
            return await _all(
                self._classify_one(uploads.pop(0), top_k, deadline, lease, budget, slots) for _ in range(len(uploads))
            )

    async def classify_pixels(self, images: list[Tensor], top_k: int, deadline: float) -> list[Predictions]:
        """``classify`` for images already at the model's input: uint8 (C, H, W) tensors, no decoding.

        The caller checks their shape (``app.v2_protocol``). Queue slots are reserved as ``classify`` does.
        """
        batcher = self._serving_batcher()
        with batcher.reserve(len(images)) as slots:
            return await _all(batcher.submit((image, top_k), deadline=deadline, slots=slots) for image in images)

    def _serving_batcher(self) -> Batcher[tuple[Tensor, int], Predictions]:
        """The batcher, while the service takes work (ready, or draining what it admitted); else 503."""
        batcher = self._batcher
        if batcher is None or self._metrics is None or self.state not in (ModelState.READY, ModelState.DRAINING):
            raise NotReady(f"model {self.name!r} is {self.state}")
        return batcher

    async def _classify_one(
        self,
        data: bytes,
        top_k: int,
        deadline: float,
        lease: BodyLease | None,
        budget: PixelBudget,
        slots: Slots,
    ) -> Predictions:
        """Decode and resize, drop the bytes, then batch and infer one image."""
        batcher, metrics = self._batcher, self._metrics
        assert batcher is not None and metrics is not None
        started = time.perf_counter()
        size = len(data)
        try:
            image = await self._preprocess(data, budget, deadline)
        finally:
            del data  # the bytes are not needed any more: not held while the image waits for its batch
            if lease is not None:
                lease.release(size)
        elapsed = time.perf_counter() - started
        metrics.observe_preprocess(elapsed)
        request_log.current().record_preprocess(elapsed)
        return await batcher.submit((image, top_k), deadline=deadline, slots=slots)

    async def _preprocess(self, data: bytes, budget: PixelBudget, deadline: float) -> Tensor:
        """Bytes -> the model's uint8 input: tiny images on the event loop, the rest in the worker pool.

        The event loop reads no more than the header (``peek_header``) of an upload. A tiny image (at most
        ``inline_decode_max_pixels`` and ``INLINE_MAX_BYTES``) is decoded here, tens of microseconds, cheaper
        than the hop to a worker thread and back: a PNG only when it is already the model's input (libpng
        and our chunk walk, never Pillow's text-chunk parsing), other formats by Pillow from at most 16 KB.
        Everything else is decoded in the worker pool, under the same limits.
        """
        engine, s = self._require_engine(), self._settings
        limits = self._limits
        if 0 < len(data) <= INLINE_MAX_BYTES and s.inline_decode_max_pixels > 0:
            header = peek_header(data)
            if header is not None and header.pixels <= s.inline_decode_max_pixels and header.format in limits.formats:
                if header.format == "PNG":
                    tensor = engine.decode_plain_png(data, max_pixels=limits.max_pixels)
                    if tensor is not None:
                        budget.spend(tensor.shape[1] * tensor.shape[2])
                        return tensor
                else:
                    image = limits.open(data)  # Pillow's header parse, of at most INLINE_MAX_BYTES
                    width, height = image.size
                    if width * height <= s.inline_decode_max_pixels:  # Pillow agrees with the peek: tiny
                        return engine.decode(image, budget=budget)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executors.preprocess, self._decode, data, budget, deadline)

    def _decode(self, data: bytes, budget: PixelBudget, deadline: float) -> Tensor:
        """A worker's decode: skipped when the request's deadline passed while it waited for the worker."""
        if time.monotonic() >= deadline:
            raise DeadlineExceeded("the deadline passed before the image was decoded")
        return self._require_engine().preprocess(data, limits=self._limits, budget=budget)

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

    def stalled_s(self, now: float) -> float:
        """How long this model's current batch has been running or waiting for the forward thread (0: none)."""
        return self._batcher.stalled_s(now) if self._batcher is not None else 0.0

    @property
    def failing(self) -> bool:
        """The last ``--max-failed-batches`` batches all failed (e.g. a sticky device error)."""
        batcher = self._batcher
        return batcher is not None and batcher.consecutive_failures >= self._settings.max_failed_batches

    def failing_for(self, now: float) -> float:
        """How long the model has been ``failing``, from its first failed batch in a row (0 when it is not)."""
        since = self._batcher.failing_since if self._batcher is not None else None
        return now - since if self.failing and since is not None else 0.0

    def fail(self, reason: str) -> None:
        """Record why this service cannot serve."""
        self.state, self.failure = ModelState.FAILED, reason
        log.error("model failed", extra={"model": self.name, "reason": reason})

    def _require_engine(self) -> Engine:
        if self.engine is None:
            raise NotReady(f"model {self.name!r} is {self.state}")
        return self.engine
