"""Gradient flow: per-layer weight-gradient norms of plain vs residual nets, from real backward passes."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from models import create_model
from models.preprocessing import normalize
from training.datasets import LoadedData

__all__ = ["conv_gradient_norms", "gradient_study"]


def conv_gradient_norms(model: nn.Module) -> list[float]:
    """L2 norm of each main-path convolution's weight gradient, input to output."""
    return [
        float(m.weight.grad.norm())
        for name, m in model.named_modules()
        if isinstance(m, nn.Conv2d) and ".downsample." not in f".{name}." and m.weight.grad is not None
    ]


def gradient_study(
    data: LoadedData,
    depths: list[int],
    *,
    batch_size: int = 128,
    steps: int = 20,
    lr: float = 0.1,
    seed: int = 0,
    device: torch.device | None = None,
) -> dict[str, Any]:
    """For each depth, plain and residual: norms at initialization and after ``steps`` SGD steps on ``device``."""
    device = device or torch.device("cpu")
    images, targets = data.train[:batch_size] if hasattr(data.train, "tensors") else next(iter(data.train))
    inputs = normalize(images.to(device), data.preprocessing)
    targets = targets.to(device)
    criterion = nn.CrossEntropyLoss()
    results: dict[str, Any] = {}
    for depth in depths:
        for prefix in ("plain", "resnet"):
            torch.manual_seed(seed)
            model = create_model(f"{prefix}{depth}", num_classes=len(data.labels), in_channels=inputs.shape[1])
            model = model.to(device)
            optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
            snapshots = {}
            for step in range(steps + 1):
                optimizer.zero_grad()
                criterion(model(inputs), targets).backward()
                if step in (0, steps):
                    snapshots["init" if step == 0 else f"after_{steps}_steps"] = conv_gradient_norms(model)
                if step < steps:
                    optimizer.step()
            results[f"{prefix}{depth}"] = snapshots
    return results
