"""The degradation problem in miniature: plain-20/56 vs ResNet-20/56 with one recipe (paper Figures 1, 6)."""

from __future__ import annotations

import argparse
import time
from typing import Any

import torch
from torch import nn
from torch.utils.data import Subset

from models import create_model
from training.datasets import LoadedData
from training.distributed import DistributedContext
from training.loops import evaluate, train_one_epoch
from training.optim import build_optimizer, build_scheduler
from training.train import make_loaders

__all__ = ["NETS", "train_curves"]

NETS = ("plain20", "plain56", "resnet20", "resnet56")


def _recipe(epochs: int, batch_size: int, lr: float, seed: int) -> argparse.Namespace:
    """The paper's CIFAR recipe, shortened: SGD 0.9, weight decay 1e-4, cosine to zero, no augmentation."""
    return argparse.Namespace(
        opt="sgd", lr=lr, momentum=0.9, nesterov=False, weight_decay=1e-4, lr_scheduler="cosine",
        warmup_epochs=1, epochs=epochs, lr_step_size=30, lr_gamma=0.1, lr_patience=3, batch_size=batch_size,
        seed=seed, workers=0,
    )  # fmt: skip


def train_curves(
    data: LoadedData, *, nets: tuple[str, ...] = NETS, epochs: int, batch_size: int, lr: float, seed: int
) -> dict[str, Any]:
    """Train each net with the same recipe; per-epoch train and test error, and seconds taken."""
    args = _recipe(epochs, batch_size, lr, seed)
    train_loader, test_loader = make_loaders(data, args, DistributedContext())
    criterion = nn.CrossEntropyLoss()
    spec = data.preprocessing
    results: dict[str, Any] = {}
    for name in nets:
        torch.manual_seed(seed)
        model = create_model(name, num_classes=len(data.labels), in_channels=spec.channels)
        model = model.to(memory_format=torch.channels_last)
        optimizer = build_optimizer(model, args)
        scheduler, _ = build_scheduler(optimizer, args, len(train_loader))
        start = time.perf_counter()
        curve = []
        for epoch in range(1, epochs + 1):
            train_loader.sampler.sampler.set_epoch(epoch)  # type: ignore[union-attr]
            train = train_one_epoch(
                model,
                train_loader,
                optimizer,
                criterion,
                device=torch.device("cpu"),
                spec=spec,
                step_scheduler=scheduler.step,
                channels_last=True,
            )  # type: ignore[union-attr]
            test = evaluate(
                model,
                test_loader,
                criterion,
                device=torch.device("cpu"),
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
