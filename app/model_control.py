"""``ModelControl``: load, hot-swap (checked), roll back and unload models while the service serves.

Every operation acts on ``WEIGHTS_DIR/NAME.safetensors`` only: the name is checked against ``MODEL_NAME``
and the file must resolve inside the weights directory (a symlink pointing out of it is refused); a URL or
a path is never accepted. One operation per model at a time (409 otherwise), none before startup finished
or while draining (503).

A new version is loaded and warmed beside the old one (loader thread; one forward per job in the forward
thread, so the old version's batches wait for one forward at most), started unpublished, checked
(``app.candidate_check``: metadata against weights, golden images through the serving path), then switched
in: one assignment in the registry, on the event loop. Requests routed before it finish on the old version,
which then drains and is kept (its engine, not its queue) for ``rollback``. A refused candidate is stopped;
the old version never stopped serving.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from app.candidate_check import CheckResult, check_candidate
from app.errors import BadRequest, CandidateRefused, Conflict, NotReady, UnknownModel
from app.loader import ModelLoader
from app.metrics import Metrics
from app.registry import ModelRegistry
from app.service import ModelService, file_version
from models import CheckpointError, read_metadata

__all__ = ["MODEL_NAME", "ControlResult", "ModelControl", "Refusal"]

log = logging.getLogger("app.model_control")

#: A model name: a checkpoint's file stem, never a path (no separators, no leading dot).
MODEL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


@dataclass(frozen=True)
class Refusal:
    """The last candidate of a model that was refused: which version, which check, why (in our words), when."""

    version: str | None
    check: str
    reason: str
    at: datetime


@dataclass(frozen=True)
class ControlResult:
    """What an operation did: ``changed`` is False when the file held the version already serving."""

    model: str
    action: str
    changed: bool
    version: str | None
    previous_version: str | None
    check: str | None
    seconds: float


class ModelControl:
    """The operations of the model control API and ``--watch-weights`` on one registry."""

    def __init__(self, registry: ModelRegistry, loader: ModelLoader, metrics: Metrics) -> None:
        self.registry = registry
        self.loader = loader
        self.metrics = metrics
        self.min_agreement = loader.settings.min_agreement
        self.busy: dict[str, str] = {}  # model -> the operation in progress
        self.previous: dict[str, ModelService] = {}  # model -> its retired version, kept for rollback
        self.refusals: dict[str, Refusal] = {}
        self.checks: dict[str, CheckResult] = {}  # model -> the check its serving version passed
        self._retiring: set[asyncio.Task[None]] = set()

    def checkpoint_path(self, name: str) -> Path:
        """``WEIGHTS_DIR/NAME.safetensors``: 400 for a name that is not one, or a file outside; 404 when absent."""
        if not MODEL_NAME.fullmatch(name):
            raise BadRequest(f"invalid model name {name!r}: letters, digits, '.', '_' and '-', not a path or URL")
        root = self.registry.weights_dir.resolve()
        path = self.registry.weights_dir / f"{name}.safetensors"
        if not path.resolve().is_relative_to(root):
            log.warning("checkpoint outside the weights directory refused", extra={"model": name})
            raise BadRequest(f"checkpoint {name!r} resolves outside the weights directory")
        if not path.is_file():
            raise UnknownModel(f"no checkpoint {name}.safetensors in the weights directory")
        return path

    async def load(self, name: str) -> ControlResult:
        """Serve a checkpoint that is not served (a new file, or an unloaded model), once it passed its checks."""
        async with self._operation(name, "load"):
            if name in self.registry.services:
                raise Conflict(f"model {name!r} is already served; reload it to serve a new version")
            return await self._swap_in(name, self.checkpoint_path(name), action="load")

    async def reload(self, name: str) -> ControlResult:
        """Serve the file's version of ``name`` (checked) in place of the one serving; a no-op when it is the same."""
        async with self._operation(name, "reload"):
            path = self.checkpoint_path(name)
            current = self.registry.services.get(name)
            if current is None:
                return await self._swap_in(name, path, action="load")
            version = await asyncio.to_thread(file_version, path)
            if version == current.version:
                return ControlResult(name, "reload", False, version, None, None, 0.0)
            return await self._swap_in(name, path, action="swap")

    async def rollback(self, name: str) -> ControlResult:
        """Serve the version that served before the last switch again (checked again); the current one is kept."""
        async with self._operation(name, "rollback"):
            current, previous = self.registry.services.get(name), self.previous.get(name)
            if current is None:
                raise UnknownModel(f"model {name!r} is not served")
            if previous is None:
                raise Conflict(f"model {name!r} has no previous version to roll back to")
            return await self._swap_in(name, current.path, action="rollback", reuse=previous)

    async def unload(self, name: str) -> ControlResult:
        """Stop serving ``name``: new requests get 404, admitted ones are answered, then its memory is released."""
        async with self._operation(name, "unload"):
            if name == self.registry.default:
                raise Conflict(f"model {name!r} is the default model and cannot be unloaded")
            started = time.perf_counter()
            service = self.registry.remove(name)
            if service is None:
                raise UnknownModel(f"model {name!r} is not served")
            self.previous.pop(name, None)
            self.checks.pop(name, None)
            self.metrics.swaps.labels(name, "unload").inc()
            log.info("model unloaded", extra={"model": name, "version": service.version})
            await service.drain()
            return ControlResult(name, "unload", True, None, service.version, None, _since(started))

    async def close(self) -> None:
        """Wait for the retiring versions to drain (at shutdown)."""
        if self._retiring:
            await asyncio.gather(*self._retiring, return_exceptions=True)

    @asynccontextmanager
    async def _operation(self, name: str, action: str) -> AsyncIterator[None]:
        if self.registry.state != "ready":
            raise NotReady(f"the service is {self.registry.state}; model control waits for it to be ready")
        if name in self.busy:
            raise Conflict(f"model {name!r}: a {self.busy[name]} is in progress")
        self.busy[name] = action
        try:
            yield
        finally:
            del self.busy[name]

    async def _swap_in(self, name: str, path: Path, *, action: str, reuse: ModelService | None = None) -> ControlResult:
        """Load (or ``reuse``), start unpublished, check, then switch in; raises ``CandidateRefused``."""
        started = time.perf_counter()
        default = name == self.registry.default
        try:
            await asyncio.to_thread(read_metadata, path)
        except CheckpointError as exc:  # its words name the file: the model's name stands for it
            detail = f"model {name!r}: {str(exc).replace(str(path), name)}"
            if name not in self.registry.services:
                self.registry.fail(name, str(exc))
            raise self._refused(name, None, CandidateRefused(detail, check="metadata")) from None
        try:
            candidate = await self.loader.load(name, path, default=default, publish=False, reuse=reuse)
        except Exception as exc:  # noqa: BLE001  (whatever loading raised refuses the candidate; the reason is logged)
            if name not in self.registry.services:
                self.registry.fail(name, f"{type(exc).__name__}: {exc}")
            else:
                log.error("candidate failed to load", extra={"model": name, "reason": f"{type(exc).__name__}: {exc}"})
            detail = f"model {name!r}: the checkpoint failed to load (the server log has the reason)"
            raise self._refused(name, None, CandidateRefused(detail, check="load")) from None
        try:
            result = await check_candidate(
                candidate, min_agreement=self.min_agreement, run_forward=self.loader.executors.run_forward
            )
        except CandidateRefused as refused:
            await candidate.stop()
            if name not in self.registry.services:
                self.registry.fail(name, refused.detail)
            raise self._refused(name, candidate.version, refused) from None
        except BaseException:
            await candidate.stop()
            raise
        candidate.publish(default=default)
        replaced = self.registry.add(candidate)
        self.checks[name] = result
        self.refusals.pop(name, None)
        kind = "load" if replaced is None else action
        self.metrics.swaps.labels(name, kind).inc()
        previous_version = replaced.version if replaced is not None else None
        log.info(
            "model switched in",
            extra={
                "model": name,
                "action": kind,
                "version": candidate.version,
                "previous_version": previous_version,
                "check": result.summary,
            },
        )
        if replaced is not None:
            self.previous[name] = replaced
            retiring = asyncio.create_task(replaced.drain(), name=f"drain {name} {replaced.version}")
            self._retiring.add(retiring)
            retiring.add_done_callback(self._retiring.discard)
        return ControlResult(name, kind, True, candidate.version, previous_version, result.summary, _since(started))

    def _refused(self, name: str, version: str | None, refused: CandidateRefused) -> CandidateRefused:
        """Record and count a refusal; returns it to be raised."""
        self.refusals[name] = Refusal(version, refused.check, refused.detail, datetime.now(UTC))
        self.metrics.refusals.labels(name, refused.check).inc()
        log.error(
            "candidate refused",
            extra={"model": name, "version": version, "check": refused.check, "reason": refused.detail},
        )
        return refused


def _since(started: float) -> float:
    return round(time.perf_counter() - started, 3)
