"""The degradation problem in miniature: plain-20/56 vs ResNet-20/56 with one recipe (paper Figures 1, 6)."""

from __future__ import annotations

import time
from typing import Any

import torch
from torch import nn
from torch.utils.data import Subset

from models import create_model
from training.datasets import LoadedData
from training.loaders import make_loaders, set_epoch
from training.loops import evaluate, train_one_epoch
from training.optim import OptimizerConfig, ScheduleConfig, build_optimizer, build_scheduler

__all__ = ["NETS", "recipe", "train_curves"]

NETS = ("plain20", "plain56", "resnet20", "resnet56")


def recipe(epochs: int, lr: float) -> tuple[OptimizerConfig, ScheduleConfig]:
    """The paper's CIFAR recipe, shortened: SGD 0.9, weight decay 1e-4, cosine to zero, no augmentation."""
    optimizer = OptimizerConfig("sgd", lr=lr, momentum=0.9, nesterov=False, weight_decay=1e-4)
    return optimizer, ScheduleConfig("cosine", epochs=epochs, warmup_epochs=1)


def train_curves(
    data: LoadedData,
    *,
    nets: tuple[str, ...] = NETS,
    epochs: int,
    batch_size: int,
    lr: float,
    seed: int,
    device: torch.device | None = None,
) -> dict[str, Any]:
    """Train each net with the same recipe on ``device`` (default: the CPU); per-epoch train and test error, seconds."""
    device = device or torch.device("cpu")
    optimizer_config, schedule_config = recipe(epochs, lr)
    train_loader, test_loader = make_loaders(
        data, batch_size=batch_size, seed=seed, workers=0, pin_memory=device.type == "cuda"
    )
    criterion = nn.CrossEntropyLoss()
    spec = data.preprocessing
    results: dict[str, Any] = {}
    for name in nets:
        torch.manual_seed(seed)
        model = create_model(name, num_classes=len(data.labels), in_channels=spec.channels)
        model = model.to(device, memory_format=torch.channels_last)
        optimizer = build_optimizer(model, optimizer_config)
        scheduler, _ = build_scheduler(optimizer, schedule_config, len(train_loader))
        assert scheduler is not None  # cosine: stepped per batch
        start = time.perf_counter()
        curve = []
        for epoch in range(1, epochs + 1):
            set_epoch(train_loader, epoch)
            train = train_one_epoch(
                model,
                train_loader,
                optimizer,
                criterion,
                device=device,
                spec=spec,
                step_scheduler=scheduler.step,
                channels_last=True,
            )
            test = evaluate(
                model,
                test_loader,
                criterion,
                device=device,
                spec=spec,
                num_classes=len(data.labels),
                channels_last=True,
            )
            curve.append({"epoch": epoch, "train_error": 1 - train.accuracy, "test_error": 1 - test.accuracy})
            print(
                f"{name:9s} epoch {epoch:2d}: train error {100 * (1 - train.accuracy):5.2f}%  "
                f"test error {100 * (1 - test.accuracy):5.2f}%",
                flush=True,
            )
        results[name] = {"curve": curve, "seconds": time.perf_counter() - start}
    return results


def subset(data: LoadedData, fraction: float) -> LoadedData:
    """Keep the first ``fraction`` of the training split (the test split stays whole)."""
    if fraction >= 1:
        return data
    keep = max(1, int(len(data.train) * fraction))
    tensors = getattr(data.train, "tensors", None)
    train = torch.utils.data.TensorDataset(*(t[:keep] for t in tensors)) if tensors else Subset(data.train, range(keep))
    return LoadedData(train, data.test, data.labels, data.preprocessing, data.in_memory)
