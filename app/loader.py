"""``ModelLoader``: checkpoint file -> a warm, started ``ModelService``, beside the models already serving.

Startup uses it for every scanned checkpoint (``load_all``); the same call loads one model later on.
Loading and warm-up run in a loader thread of their own, so the batches of the models already serving
are not held up; then one forward per warm-up batch size runs in the forward thread (``Engine.prime``),
each a job of its own, so the batches of models already serving wait for one forward at most.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from pathlib import Path

from app.devices import ServingDevice
from app.executors import Executors
from app.metrics import Metrics
from app.registry import ModelRegistry
from app.service import ModelService
from app.settings import Settings

__all__ = ["ModelLoader"]


class ModelLoader:
    """Builds, loads, warms and starts model services with the service's settings, device and threads."""

    def __init__(self, settings: Settings, device: ServingDevice, executors: Executors, metrics: Metrics) -> None:
        self.settings = settings
        self.device = device
        self.executors = executors
        self.metrics = metrics

    def new_service(self, name: str, path: Path) -> ModelService:
        """A service for the checkpoint at ``path``, not loaded yet."""
        return ModelService(
            name, path, settings=self.settings, device=self.device, executors=self.executors, metrics=self.metrics
        )

    async def load(
        self, name: str, path: Path, *, default: bool, publish: bool = True, reuse: ModelService | None = None
    ) -> ModelService:
        """A started service for the checkpoint at ``path``; raises what loading raised.

        ``publish=False`` starts a candidate that does not own the model's gauges yet (``ModelService.start``);
        ``reuse``: serve that retired service's engine instead of loading the file (a rollback).
        """
        service = self.new_service(name, path)
        if reuse is not None:
            service.reuse(reuse)
        else:
            await self.executors.run_load(service.load)
        try:
            for size in service.prime_sizes():  # one forward per job: other models' batches run in between
                await self.executors.run_forward(partial(service.prime, size))
            service.start(default=default, publish=publish)
        except Exception as exc:
            service.fail(f"{type(exc).__name__}: {exc}")
            await service.stop()
            raise
        return service

    async def load_all(
        self, registry: ModelRegistry, *, on_fatal: Callable[[str], None], on_ready: Callable[[], None]
    ) -> None:
        """Load every scanned checkpoint, one after another, serving each as soon as it is warm.

        Then the registry is ready (``on_ready``), or, when the default model failed or ``--strict``
        saw any failure, failed (``on_fatal`` with the reason).
        """
        for name, path in registry.paths.items():
            try:
                service = await self.load(name, path, default=name == registry.default)
            except Exception as exc:  # noqa: BLE001  (a checkpoint that fails is skipped and logged, or fatal)
                registry.fail(name, f"{type(exc).__name__}: {exc}")
                continue
            registry.add(service)
        reason = None
        if registry.strict and registry.failures:
            reason = f"--strict and {len(registry.failures)} checkpoint(s) failed: {sorted(registry.failures)}"
        elif registry.default not in registry.services:
            reason = f"the default model {registry.default!r} failed to load"
        if reason is not None:
            registry.mark_failed(reason)
            on_fatal(reason)
        elif registry.mark_ready():  # not when a SIGTERM came during the load
            on_ready()
