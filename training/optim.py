"""Optimizers and learning-rate schedules, described by small typed configs (the CLIs build them from flags)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

import torch
from torch import nn
from torch.optim.lr_scheduler import (
    CosineAnnealingLR,
    LinearLR,
    LRScheduler,
    ReduceLROnPlateau,
    SequentialLR,
    StepLR,
)

__all__ = ["OPTIMIZERS", "SCHEDULERS", "OptimizerConfig", "ScheduleConfig", "build_optimizer", "build_scheduler"]

OptimizerName = Literal["sgd", "adam", "adamw"]
ScheduleName = Literal["cosine", "step", "plateau", "none"]
OPTIMIZERS: tuple[str, ...] = get_args(OptimizerName)
SCHEDULERS: tuple[str, ...] = get_args(ScheduleName)


@dataclass(frozen=True)
class OptimizerConfig:
    """Which optimizer, at which peak learning rate; ``momentum`` and ``nesterov`` apply to SGD only.

    ``weight_decay`` applies to weights, not to BatchNorm parameters and biases.
    """

    name: OptimizerName
    lr: float
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 0.0

    def __post_init__(self) -> None:
        if self.name not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {', '.join(OPTIMIZERS)}, got {self.name!r}")


@dataclass(frozen=True)
class ScheduleConfig:
    """Which learning-rate schedule over ``epochs``.

    ``cosine``: linear warm-up for ``warmup_epochs``, then cosine decay to zero, per batch.
    ``step``: multiply by ``gamma`` every ``step_size`` epochs. ``plateau``: multiply by ``gamma``
    when the test loss has not improved for ``patience`` epochs. ``none``: constant.
    """

    name: ScheduleName
    epochs: int
    warmup_epochs: int = 0
    step_size: int = 30
    gamma: float = 0.1
    patience: int = 3

    def __post_init__(self) -> None:
        if self.name not in SCHEDULERS:
            raise ValueError(f"schedule must be one of {', '.join(SCHEDULERS)}, got {self.name!r}")
        if self.warmup_epochs < 0:
            raise ValueError(f"warmup_epochs must be >= 0, got {self.warmup_epochs}")


def _parameter_groups(model: nn.Module, weight_decay: float) -> list[dict[str, object]]:
    """No weight decay on BatchNorm parameters and biases (the usual ResNet recipe)."""
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    for parameter in model.parameters():
        if parameter.requires_grad:
            (no_decay if parameter.ndim <= 1 else decay).append(parameter)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def build_optimizer(model: nn.Module, config: OptimizerConfig) -> torch.optim.Optimizer:
    """SGD (momentum, optional Nesterov), Adam or AdamW over ``model``'s parameters."""
    groups = _parameter_groups(model, config.weight_decay)
    if config.name == "sgd":
        return torch.optim.SGD(groups, lr=config.lr, momentum=config.momentum, nesterov=config.nesterov)
    if config.name == "adam":
        return torch.optim.Adam(groups, lr=config.lr)
    return torch.optim.AdamW(groups, lr=config.lr)


def build_scheduler(
    optimizer: torch.optim.Optimizer, config: ScheduleConfig, steps_per_epoch: int
) -> tuple[LRScheduler | ReduceLROnPlateau | None, str]:
    """The schedule and when to step it: ``"step"`` (every batch), ``"epoch"``, ``"plateau"`` or ``"none"``."""
    if config.name == "cosine":
        warmup_steps, total_steps = config.warmup_epochs * steps_per_epoch, config.epochs * steps_per_epoch
        return _warmup_cosine(optimizer, warmup_steps, total_steps), "step"
    if config.name == "step":
        return StepLR(optimizer, step_size=config.step_size, gamma=config.gamma), "epoch"
    if config.name == "plateau":
        return ReduceLROnPlateau(optimizer, factor=config.gamma, patience=config.patience), "plateau"
    return None, "none"


def _warmup_cosine(optimizer: torch.optim.Optimizer, warmup_steps: int, total_steps: int) -> LRScheduler:
    """Per batch: step ``k`` < ``warmup_steps`` runs at ``(k + 1) / warmup_steps`` of the peak, then cosine to zero.

    The cosine reaches zero after ``total_steps`` batches in all (warm-up included).
    """
    decay_steps = max(1, total_steps - warmup_steps)
    if warmup_steps == 0:
        return CosineAnnealingLR(optimizer, T_max=decay_steps)
    # LinearLR goes from start_factor to 1 in total_iters steps: 1/W, 2/W, ..., 1 over steps 0..W-1.
    warmup = LinearLR(optimizer, start_factor=1 / warmup_steps, total_iters=max(1, warmup_steps - 1))
    cosine = CosineAnnealingLR(optimizer, T_max=decay_steps)
    return SequentialLR(optimizer, [warmup, cosine], milestones=[warmup_steps])
