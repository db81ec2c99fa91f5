"""Optimizers and schedules from typed configs: the warm-up + cosine curve, resuming it, the other schedules."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from training.optim import OptimizerConfig, ScheduleConfig, build_optimizer, build_scheduler


def lrs(optimizer: torch.optim.Optimizer, scheduler: object, steps: int) -> list[float]:
    """The learning rate each of ``steps`` batches runs at, stepping per batch as the training loop does."""
    seen = []
    for _ in range(steps):
        seen.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()  # type: ignore[attr-defined]
    return seen


def expected_warmup_cosine(step: int, warmup: int, total: int) -> float:
    """The recipe: (step + 1) / warmup during warm-up, then cosine from 1 to 0 over the remaining steps."""
    if step < warmup:
        return (step + 1) / warmup
    return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))


@pytest.mark.parametrize(("warmup_epochs", "epochs", "steps_per_epoch"), [(1, 4, 5), (2, 5, 3), (1, 3, 1), (0, 3, 4)])
def test_cosine_warms_up_linearly_then_decays_to_zero(warmup_epochs: int, epochs: int, steps_per_epoch: int) -> None:
    optimizer = build_optimizer(nn.Linear(3, 2), OptimizerConfig("sgd", lr=0.2))
    config = ScheduleConfig("cosine", epochs=epochs, warmup_epochs=warmup_epochs)
    scheduler, every = build_scheduler(optimizer, config, steps_per_epoch)
    assert every == "step"
    total, warmup = epochs * steps_per_epoch, warmup_epochs * steps_per_epoch
    expected = [0.2 * expected_warmup_cosine(k, warmup, total) for k in range(total)]
    assert lrs(optimizer, scheduler, total) == pytest.approx(expected, abs=1e-12)
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize("stop_after", [2, 4, 9])  # mid warm-up, at the switch to cosine, mid cosine
def test_a_resumed_schedule_continues_exactly(stop_after: int) -> None:
    config = ScheduleConfig("cosine", epochs=4, warmup_epochs=1)

    def fresh() -> tuple[torch.optim.Optimizer, object]:
        optimizer = build_optimizer(nn.Linear(3, 2), OptimizerConfig("sgd", lr=0.1, weight_decay=1e-4))
        return optimizer, build_scheduler(optimizer, config, steps_per_epoch=4)[0]

    optimizer, scheduler = fresh()
    straight = lrs(optimizer, scheduler, 16)
    optimizer, scheduler = fresh()
    first = lrs(optimizer, scheduler, stop_after)
    saved = optimizer.state_dict(), scheduler.state_dict()  # type: ignore[attr-defined]
    optimizer, scheduler = fresh()
    optimizer.load_state_dict(saved[0])
    scheduler.load_state_dict(saved[1])  # type: ignore[attr-defined]
    assert first + lrs(optimizer, scheduler, 16 - stop_after) == straight


def test_step_plateau_and_none_schedules() -> None:
    optimizer = build_optimizer(nn.Linear(3, 2), OptimizerConfig("sgd", lr=1.0))
    scheduler, every = build_scheduler(optimizer, ScheduleConfig("step", epochs=5, step_size=2, gamma=0.5), 10)
    assert every == "epoch" and lrs(optimizer, scheduler, 5) == [1.0, 1.0, 0.5, 0.5, 0.25]
    _, every = build_scheduler(optimizer, ScheduleConfig("plateau", epochs=5, patience=1), 10)
    assert every == "plateau"
    assert build_scheduler(optimizer, ScheduleConfig("none", epochs=5), 10) == (None, "none")


def test_optimizers_and_weight_decay_groups() -> None:
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
    sgd = build_optimizer(model, OptimizerConfig("sgd", lr=0.1, momentum=0.8, nesterov=True, weight_decay=5e-4))
    assert isinstance(sgd, torch.optim.SGD) and sgd.defaults["nesterov"] and sgd.defaults["momentum"] == 0.8
    decay, no_decay = sgd.param_groups
    assert decay["weight_decay"] == 5e-4 and [p.ndim for p in decay["params"]] == [2]
    assert no_decay["weight_decay"] == 0.0 and len(no_decay["params"]) == 3  # the bias, BN weight and BN bias
    assert isinstance(build_optimizer(model, OptimizerConfig("adam", lr=1e-3)), torch.optim.Adam)
    assert isinstance(build_optimizer(model, OptimizerConfig("adamw", lr=1e-3)), torch.optim.AdamW)


def test_unknown_names_are_rejected_when_the_config_is_made() -> None:
    with pytest.raises(ValueError, match="optimizer must be one of sgd, adam, adamw, got 'lamb'"):
        OptimizerConfig("lamb", lr=0.1)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="schedule must be one of cosine, step, plateau, none, got 'linear'"):
        ScheduleConfig("linear", epochs=1)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="warmup_epochs must be >= 0"):
        ScheduleConfig("cosine", epochs=1, warmup_epochs=-1)
