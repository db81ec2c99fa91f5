"""PNG figures of a training run: loss and accuracy curves, and a confusion matrix."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.figure import Figure
from torch import Tensor

from models.checkpoint import write_atomically

__all__ = ["plot_curves", "plot_confusion"]


def plot_curves(history: list[dict[str, Any]], path: Path, title: str) -> Path:
    """Train/test loss and accuracy per epoch, side by side."""
    epochs = [row["epoch"] for row in history]
    figure, (loss_axis, accuracy_axis) = plt.subplots(1, 2, figsize=(11, 4))
    loss_axis.plot(epochs, [row["train_loss"] for row in history], label="train")
    loss_axis.plot(epochs, [row["test_loss"] for row in history], label="test")
    loss_axis.set(xlabel="epoch", ylabel="loss", title="loss")
    accuracy_axis.plot(epochs, [100 * row["train_accuracy"] for row in history], label="train")
    accuracy_axis.plot(epochs, [100 * row["test_accuracy"] for row in history], label="test")
    accuracy_axis.set(xlabel="epoch", ylabel="accuracy (%)", title="accuracy")
    for axis in (loss_axis, accuracy_axis):
        axis.grid(alpha=0.3)
        axis.legend()
    figure.suptitle(title)
    return _save(figure, path)


def _save(figure: Figure, path: Path) -> Path:
    """Write ``figure`` as a PNG atomically (a full disk leaves the previous figure), then close it."""
    figure.tight_layout()
    buffer = io.BytesIO()
    try:
        figure.savefig(buffer, format="png", dpi=110)
    finally:
        plt.close(figure)
    write_atomically(path, buffer.getvalue())
    return path


def plot_confusion(confusion: Tensor, labels: list[str], path: Path, title: str) -> Path:
    """Row-normalised confusion matrix with counts in each cell."""
    counts = confusion.float()
    rates = counts / counts.sum(dim=1, keepdim=True).clamp(min=1)
    size = max(5.0, 0.6 * len(labels) + 2)
    figure, axis = plt.subplots(figsize=(size, size))
    axis.imshow(rates.numpy(), cmap="Blues", vmin=0, vmax=1)
    axis.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
    axis.set_yticks(range(len(labels)), labels)
    axis.set(xlabel="predicted", ylabel="true", title=title)
    if len(labels) <= 20:
        for i in range(len(labels)):
            for j in range(len(labels)):
                color = "white" if rates[i, j] > 0.5 else "black"
                axis.text(j, i, int(counts[i, j]), ha="center", va="center", fontsize=7, color=color)
    return _save(figure, path)
