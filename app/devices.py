"""The device a service runs its models on: a torch device (``cpu``, ``cuda:N``) or the simulated one.

``resolve_serving_device(settings)`` turns ``--device`` and ``--precision`` into one (or a clear
``ValueError``); ``load_engine`` loads a checkpoint onto it. The service, the benchmark's ceiling and
its peers all load models through here, so ``--device sim`` means the same thing everywhere.
"""

from __future__ import annotations

from pathlib import Path
from typing import TypeAlias

import torch

from app.engine import Engine
from app.settings import Settings
from app.simulated import SimulatedDevice, SimulatedEngine
from models.device import resolve_device, resolve_precision

__all__ = ["ServingDevice", "load_engine", "load_engine_named", "resolve_serving_device"]

ServingDevice: TypeAlias = torch.device | SimulatedDevice


def resolve_serving_device(settings: Settings) -> ServingDevice:
    """``settings.device`` checked against ``settings.precision``; raises ``ValueError`` with the reason."""
    if settings.device == "sim":
        if settings.precision != "fp16":
            raise ValueError(f"--device sim models fp16 timings; use --precision fp16, not {settings.precision}")
        return SimulatedDevice(settings.sim_t0_ms / 1000, settings.sim_t1_ms / 1000, settings.sim_lock_path)
    device = resolve_device(settings.device)
    resolve_precision(settings.precision, device)
    return device


def load_engine(path: Path, device: ServingDevice, *, precision: str, channels_last: bool = True) -> Engine:
    """The checkpoint at ``path`` on ``device``, ready for ``predict``."""
    if isinstance(device, SimulatedDevice):
        return SimulatedEngine.load_simulated(path, device, precision=precision)
    return Engine.load(path, device=device, precision=precision, channels_last=channels_last)


def load_engine_named(path: Path, device: str, *, precision: str, channels_last: bool = True) -> Engine:
    """For tools taking ``--device`` / ``--precision`` strings (the benchmark, its peers): resolve, then load."""
    settings = Settings.model_validate({"device": device, "precision": precision})
    return load_engine(path, resolve_serving_device(settings), precision=precision, channels_last=channels_last)
