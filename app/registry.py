"""``ModelRegistry``: which checkpoints exist, which service serves each name, the default, readiness.

It neither loads nor serves: ``scan()`` reads every checkpoint's header in the weights directory
(cheap; a broken file is recorded, or fails startup with ``--strict``), the loader puts services in
with ``add()``, routes look them up with ``get()``. Readiness is the service's as a whole:
``starting`` until every scanned model is warm, then ``ready``; ``draining`` after SIGTERM; ``failed``
when startup cannot succeed. With ``--processes N`` each worker process has its registry, and a
``ReadinessBoard`` in shared memory holds every worker's phase (``on_phase`` writes this one's).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from multiprocessing.context import BaseContext
from pathlib import Path
from typing import Literal, get_args

from app.errors import NotReady, UnknownModel
from app.service import ModelService, ModelState
from models import CheckpointError, read_metadata

__all__ = ["LOAD_FAILED", "ModelRegistry", "Phase", "ReadinessBoard", "StartupError"]

#: The service's phase as a whole: starting -> ready -> draining; or failed.
Phase = Literal["starting", "ready", "draining", "failed"]

log = logging.getLogger("app.registry")

#: What a client learns about a checkpoint that failed; the reason (an exception's text, paths) is logged.
LOAD_FAILED = "failed to load; the server log has the reason"


class StartupError(RuntimeError):
    """The service cannot start: no usable checkpoint, a bad setting, or a failure under ``--strict``."""


class ModelRegistry:
    """Checkpoints by name, the services serving them, the default model and the readiness state."""

    def __init__(
        self,
        weights_dir: Path,
        *,
        default_model: str | None = None,
        strict: bool = False,
        on_phase: Callable[[Phase], None] | None = None,
    ) -> None:
        self.weights_dir = weights_dir
        self.requested_default = default_model
        self.strict = strict
        self.paths: dict[str, Path] = {}
        self.services: dict[str, ModelService] = {}
        self.failures: dict[str, str] = {}  # name -> reason, for the log and startup errors; never for clients
        self.unloaded: set[str] = set()  # names taken out of service by the model control API or --watch-weights
        self.default: str | None = None
        self.state: Phase = "starting"
        #: Called with each new phase (a worker of ``--processes`` writes it to the ``ReadinessBoard``).
        self.on_phase = on_phase

    @property
    def ready(self) -> bool:
        """Every model was loaded and warmed, the default one still serves, none is failing, not draining."""
        return self.not_ready_reason() is None

    def not_ready_reason(self) -> str | None:
        """Why the service should get no traffic now; ``None`` when it is ready."""
        if self.state != "ready":
            return f"service is {self.state}"
        default = self.services.get(self.default) if self.default is not None else None
        if default is None or default.state is not ModelState.READY:
            return f"the default model {self.default!r} is {default.state if default else 'not loaded'}"
        failing = sorted(name for name, service in self.services.items() if service.failing)
        if failing:
            return f"the last batches of model(s) {failing} all failed"
        return None

    def stalled(self, now: float, bound_s: float) -> dict[str, str]:
        """Models stuck for over ``bound_s``: a batch running (or waiting for the forward thread) that long, or
        every batch failing that long (which readiness alone would leave unrestarted: no traffic, no recovery)."""
        stuck = {}
        for name, service in self.services.items():
            if (running := service.stalled_s(now)) > bound_s:
                stuck[name] = f"a batch running for {running:.1f} s"
            elif (failing := service.failing_for(now)) > bound_s:
                stuck[name] = f"every batch failing for {failing:.1f} s"
        return stuck

    def mark_ready(self) -> bool:
        """Startup succeeded: ``starting`` -> ``ready``; False (no change) if draining or failed meanwhile."""
        if self.state != "starting":
            return False
        self._enter("ready")
        log.info("ready", extra={"models": sorted(self.services), "default": self.default})
        return True

    def mark_failed(self, reason: str) -> None:
        """Startup cannot succeed; the process is about to stop."""
        self._enter("failed")
        log.critical("startup failed: %s", reason)

    def scan(self) -> None:
        """Find the checkpoints and validate their headers; raises ``StartupError`` when none is usable."""
        files = sorted(self.weights_dir.glob("*.safetensors")) if self.weights_dir.is_dir() else []
        for path in files:
            try:
                read_metadata(path)
            except CheckpointError as exc:
                self.fail(path.stem, str(exc))
                if self.strict:
                    raise StartupError(f"--strict: checkpoint {path.stem!r} failed: {exc}") from None
                continue
            self.paths[path.stem] = path
        if not self.paths:
            raise StartupError(f"no loadable *.safetensors checkpoint in {self.weights_dir.resolve()}")
        if self.requested_default is not None and self.requested_default not in self.paths:
            raise StartupError(f"--default-model {self.requested_default!r} is not among {sorted(self.paths)}")
        self.default = self.requested_default or next(iter(self.paths))

    def add(self, service: ModelService) -> ModelService | None:
        """Serve ``service`` under its name from now on; returns the service it replaces (to be drained)."""
        replaced = self.services.get(service.name)
        self.services[service.name] = service
        self.paths[service.name] = service.path
        self.failures.pop(service.name, None)
        self.unloaded.discard(service.name)
        return replaced

    def remove(self, name: str) -> ModelService | None:
        """Serve ``name`` no more (its requests get 404 from now on); returns its service (to be drained)."""
        service = self.services.pop(name, None)
        if service is not None:
            self.unloaded.add(name)
        return service

    def fail(self, name: str, reason: str) -> None:
        """Record that checkpoint ``name`` cannot be served, and why."""
        self.failures[name] = reason
        log.error("checkpoint skipped", extra={"model": name, "reason": reason})

    def get(self, name: str | None) -> ModelService:
        """The service for ``name`` (default: the default model); 404 unknown, 503 loading or failed to load."""
        name = name or self.default
        service = self.services.get(name) if name is not None else None
        if service is not None:
            return service
        if name in self.unloaded:
            raise UnknownModel(f"model {name!r} is unloaded; available: {sorted(self.services)}")
        if name in self.failures:  # a header unreadable at scan, or weights that failed to load
            raise NotReady(f"model {name!r} {LOAD_FAILED}")
        if name in self.paths:
            raise NotReady(f"model {name!r} is still loading")
        raise UnknownModel(f"unknown model {name!r}; available: {sorted(self.services)}")

    def drain(self) -> None:
        """Stop reporting ready (SIGTERM); requests already accepted still complete."""
        if self.state != "failed":
            self._enter("draining")
            log.info("draining: /ready now answers 503")

    def _enter(self, phase: Phase) -> None:
        self.state = phase
        if self.on_phase is not None:
            self.on_phase(phase)


class ReadinessBoard:
    """The phase of every worker process of ``--processes``, in shared memory: one byte per worker.

    The supervisor creates it (zeros: every worker ``starting``) and hands it to each worker it
    spawns; a worker writes its own slot (``ModelRegistry.on_phase``), ``/ready`` reads them all,
    and the supervisor puts a dead worker's slot back to ``starting``. A byte is written and read
    whole, so no lock is needed.
    """

    PHASES: tuple[Phase, ...] = get_args(Phase)

    def __init__(self, context: BaseContext, workers: int) -> None:
        self._slots = context.RawArray("b", workers)

    def __len__(self) -> int:
        return len(self._slots)

    def set(self, worker: int, phase: Phase) -> None:
        """Worker ``worker`` is now in ``phase``."""
        self._slots[worker] = self.PHASES.index(phase)

    def phase(self, worker: int) -> Phase:
        """Worker ``worker``'s phase."""
        return self.PHASES[self._slots[worker]]

    def not_ready(self) -> dict[int, Phase]:
        """The workers that are not ready, with their phase."""
        phases = {worker: self.phase(worker) for worker in range(len(self))}
        return {worker: phase for worker, phase in phases.items() if phase != "ready"}
