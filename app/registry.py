"""The models the service holds: found at startup, loaded and warmed in the background, then served.

Startup is two steps. ``scan()`` (in the lifespan, before the port opens) reads every checkpoint's
header: cheap, and a broken file fails startup right there with ``--strict``. ``start()`` then loads
the weights and warms each model up in the forward thread while ``/health`` already answers and
``/ready`` says 503; each model gets its batcher once warm, and ``/ready`` turns 200 when all are.
"""

from __future__ import annotations

import asyncio
import functools
import gc
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from app.batcher import Batcher
from app.engine import Engine, resolve_device, resolve_precision
from app.errors import NotReady, UnknownModel
from app.metrics import Metrics
from app.preprocess import is_tiny_image
from app.settings import Settings
from models import CheckpointError, read_metadata

__all__ = ["ModelRegistry", "ServedModel", "StartupError"]

log = logging.getLogger("app.registry")


class StartupError(RuntimeError):
    """The service cannot start: no usable checkpoint, a bad setting, or a failure under ``--strict``."""


@dataclass
class ServedModel:
    """A warm engine and the batcher in front of it."""

    name: str
    engine: Engine
    batcher: Batcher[Any, Any]


class ModelRegistry:
    """Loaded models by name, the default one, the thread pools, and the readiness state."""

    def __init__(self, settings: Settings, metrics: Metrics) -> None:
        self.settings = settings
        self.metrics = metrics
        self.paths: dict[str, Path] = {}
        self.models: dict[str, ServedModel] = {}
        self.failures: dict[str, str] = {}
        self.default: str | None = None
        self.state = "starting"  # starting -> ready -> draining; or failed
        self.device = torch.device("cpu")
        # One torch thread per worker: their tensor ops are tiny, and each thread with more would keep an
        # OpenMP team of its own spinning beside the forward's (9 ms more per ResNet-50 request at c=1).
        self.preprocess_pool = ThreadPoolExecutor(
            settings.workers, thread_name_prefix="preprocess", initializer=torch.set_num_threads, initargs=(1,)
        )
        self.forward_pool = ThreadPoolExecutor(
            1, thread_name_prefix="forward", initializer=torch.set_num_threads, initargs=(settings.torch_threads,)
        )
        self._task: asyncio.Task[None] | None = None

    @property
    def ready(self) -> bool:
        """Every model is loaded and warm, and the service is not draining."""
        return self.state == "ready"

    def scan(self) -> None:
        """Find the checkpoints and validate their headers; raises ``StartupError`` when none is usable."""
        s = self.settings
        try:
            self.device = resolve_device(s.device)
            resolve_precision(s.precision, self.device)
        except ValueError as exc:
            raise StartupError(str(exc)) from None
        torch.set_num_threads(s.torch_threads)
        files = sorted(s.weights_dir.glob("*.safetensors")) if s.weights_dir.is_dir() else []
        for path in files:
            try:
                read_metadata(path)
                self.paths[path.stem] = path
            except CheckpointError as exc:
                self._fail(path.stem, str(exc))
        if not self.paths:
            raise StartupError(f"no loadable *.safetensors checkpoint in {s.weights_dir.resolve()}")
        if s.default_model is not None and s.default_model not in self.paths:
            raise StartupError(f"--default-model {s.default_model!r} is not among {sorted(self.paths)}")
        self.default = s.default_model or next(iter(self.paths))

    def start(self, on_fatal: Callable[[str], None]) -> None:
        """Load and warm every scanned model in the background; ``on_fatal`` when startup cannot succeed."""
        self._task = asyncio.get_running_loop().create_task(self._load_all(on_fatal), name="load-models")

    async def _load_all(self, on_fatal: Callable[[str], None]) -> None:
        loop = asyncio.get_running_loop()
        for name, path in self.paths.items():
            try:
                started = time.perf_counter()
                engine = await loop.run_in_executor(self.forward_pool, self._load_one, path)
            except Exception as exc:  # noqa: BLE001  (skipped and logged, or fatal under --strict)
                self._fail(name, f"{type(exc).__name__}: {exc}")
                continue
            self._serve(engine)
            log.info(
                "model ready",
                extra={
                    "model": name,
                    "arch": engine.metadata.architecture.name,
                    "device": str(engine.device),
                    "precision": engine.precision,
                    "batch_cap": engine.batch_cap,
                    "warmup_ms": engine.warmup_ms,
                    "load_s": round(time.perf_counter() - started, 3),
                },
            )
        reason = None
        if self.settings.strict and self.failures:
            reason = f"--strict and {len(self.failures)} checkpoint(s) failed: {sorted(self.failures)}"
        elif self.default not in self.models:
            reason = f"the default model {self.default!r} failed to load"
        if reason is not None:
            self.state = "failed"
            log.critical("startup failed: %s", reason)
            on_fatal(reason)
            return
        self.state = "ready"
        # Startup objects (modules, weights, OpenAPI schema) live until exit: move them out of the
        # collector's reach so the collections that request traffic triggers stay short.
        gc.collect()
        gc.freeze()
        log.info("ready", extra={"models": sorted(self.models), "default": self.default})

    def _load_one(self, path: Path) -> Engine:
        s = self.settings
        engine = Engine.load(path, device=self.device, precision=s.precision, channels_last=s.channels_last)
        engine.warmup(s.max_batch_size, autotune=s.autotune_batch)
        return engine

    def _serve(self, engine: Engine) -> None:
        s, name = self.settings, engine.name
        batcher: Batcher[Any, Any] = Batcher(
            engine.infer,
            max_batch_size=engine.batch_cap,
            max_wait_s=s.max_wait_ms / 1000,
            max_queue=s.max_queue,
            timeout_s=s.timeout_s,
            executor=self.forward_pool,
            on_batch=self.metrics.batch_observer(name),
            name=name,
        )
        batcher.start()
        self.metrics.queue_depth.labels(name).set_function(lambda: batcher.depth)
        arch = engine.metadata.architecture.name
        labels = (name, arch, str(engine.device), engine.precision, str(engine.batch_cap), str(name == self.default))
        self.metrics.model_info.labels(*labels).set(1)
        self.models[name] = ServedModel(name, engine, batcher)

    def _fail(self, name: str, reason: str) -> None:
        self.failures[name] = reason
        log.error("checkpoint skipped", extra={"model": name, "reason": reason})
        if self.settings.strict and self.state == "starting" and self._task is None:
            raise StartupError(f"--strict: checkpoint {name!r} failed: {reason}")

    def get(self, name: str | None) -> ServedModel:
        """The model called ``name`` (default: the default model); 404 unknown, 503 not yet warm."""
        name = name or self.default
        if name in self.models:
            return self.models[name]
        if name in self.paths and self.state in ("starting", "failed"):
            raise NotReady(f"model {name!r} is still loading")
        raise UnknownModel(f"unknown model {name!r}; available: {sorted(self.models)}")

    async def classify(self, served: ServedModel, data: bytes, top_k: int, deadline: float, trace: dict) -> Any:
        """Preprocess (inline when tiny, else in the worker pool), then batch, infer and post-process."""
        started = time.perf_counter()
        job = functools.partial(served.engine.preprocess, data, max_pixels=self.settings.max_image_pixels)
        if is_tiny_image(data, self.settings.inline_decode_max_pixels):
            image = job()  # tens of microseconds: cheaper than the hop to a worker thread and back
        else:
            image = await asyncio.get_running_loop().run_in_executor(self.preprocess_pool, job)
        elapsed = time.perf_counter() - started
        self.metrics.preprocess.labels(served.name).observe(elapsed)
        trace["preprocess_ms"] = round(elapsed * 1000, 3)
        return await served.batcher.submit((image, top_k), deadline=deadline, trace=trace)

    def drain(self) -> None:
        """Stop reporting ready (SIGTERM); requests already accepted still complete."""
        if self.state != "failed":
            self.state = "draining"
            log.info("draining: /ready now answers 503")

    async def close(self) -> None:
        """Stop the loader and the batchers, and release the thread pools."""
        if self._task is not None and not self._task.done():
            self._task.cancel()
        for served in self.models.values():
            await served.batcher.stop()
        self.preprocess_pool.shutdown(wait=False, cancel_futures=True)
        self.forward_pool.shutdown(wait=False, cancel_futures=True)
