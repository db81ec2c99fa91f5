"""Optimizers and learning-rate schedules, chosen by name from the command line."""

from __future__ import annotations

import math
from argparse import Namespace

import torch
from torch import nn
from torch.optim.lr_scheduler import LambdaLR, LRScheduler, ReduceLROnPlateau, StepLR

__all__ = ["OPTIMIZERS", "SCHEDULERS", "build_optimizer", "build_scheduler"]

OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULERS = ("cosine", "step", "plateau", "none")


def _parameter_groups(model: nn.Module, weight_decay: float) -> list[dict[str, object]]:
    """No weight decay on BatchNorm parameters and biases (the usual ResNet recipe)."""
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    for parameter in model.parameters():
        if parameter.requires_grad:
            (no_decay if parameter.ndim <= 1 else decay).append(parameter)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def build_optimizer(model: nn.Module, args: Namespace) -> torch.optim.Optimizer:
    """SGD (momentum, optional Nesterov), Adam or AdamW over ``model``'s parameters."""
    groups = _parameter_groups(model, args.weight_decay)
    if args.opt == "sgd":
        return torch.optim.SGD(groups, lr=args.lr, momentum=args.momentum, nesterov=args.nesterov)
    if args.opt == "adam":
        return torch.optim.Adam(groups, lr=args.lr)
    return torch.optim.AdamW(groups, lr=args.lr)


def build_scheduler(
    optimizer: torch.optim.Optimizer, args: Namespace, steps_per_epoch: int
) -> tuple[LRScheduler | ReduceLROnPlateau | None, str]:
    """The schedule and when to step it: ``"step"`` (every batch), ``"epoch"`` or ``"plateau"``.

    ``cosine``: linear warm-up for ``warmup_epochs`` then cosine decay to zero, per batch.
    ``step``: multiply by ``lr_gamma`` every ``lr_step_size`` epochs. ``plateau``: multiply by
    ``lr_gamma`` when the test loss has not improved for ``lr_patience`` epochs.
    """
    if args.lr_scheduler == "cosine":
        warmup = args.warmup_epochs * steps_per_epoch
        total = max(1, args.epochs * steps_per_epoch)

        def factor(step: int) -> float:
            if step < warmup:
                return (step + 1) / warmup
            progress = (step - warmup) / max(1, total - warmup)
            return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

        return LambdaLR(optimizer, factor), "step"
    if args.lr_scheduler == "step":
        return StepLR(optimizer, step_size=args.lr_step_size, gamma=args.lr_gamma), "epoch"
    if args.lr_scheduler == "plateau":
        return ReduceLROnPlateau(optimizer, factor=args.lr_gamma, patience=args.lr_patience), "plateau"
    return None, "none"
