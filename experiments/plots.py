"""Figures of the experiments (matplotlib, Agg)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

__all__ = ["plot_degradation", "plot_gradients"]

STYLE = {"plain20": ("tab:orange", "--"), "plain56": ("tab:red", "--"),
         "resnet20": ("tab:cyan", "-"), "resnet56": ("tab:blue", "-")}  # fmt: skip


def plot_degradation(results: dict[str, Any], path: Path, title: str) -> Path:
    """Training (left) and test (right) error per epoch, plain dashed, residual solid."""
    figure, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=False)
    for name, result in results.items():
        color, line = STYLE.get(name, (None, "-"))
        epochs = [row["epoch"] for row in result["curve"]]
        for axis, key in zip(axes, ("train_error", "test_error"), strict=True):
            axis.plot(epochs, [100 * row[key] for row in result["curve"]], line, color=color, label=name)
    for axis, label in zip(axes, ("training error (%)", "test error (%)"), strict=True):
        axis.set(xlabel="epoch", ylabel=label)
        axis.grid(alpha=0.3)
        axis.legend()
    figure.suptitle(title)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def plot_gradients(results: dict[str, Any], path: Path, title: str) -> Path:
    """Per-layer gradient norm (log scale), at initialization and after training steps."""
    snapshots = list(next(iter(results.values())))
    figure, axes = plt.subplots(1, len(snapshots), figsize=(6 * len(snapshots), 4), squeeze=False)
    for axis, snapshot in zip(axes[0], snapshots, strict=True):
        for name, result in results.items():
            norms = result[snapshot]
            axis.plot(range(1, len(norms) + 1), norms, "--" if name.startswith("plain") else "-", label=name)
        axis.set(yscale="log", xlabel="convolution (input → output)", ylabel="‖∂loss/∂W‖", title=snapshot)
        axis.grid(alpha=0.3)
        axis.legend(fontsize=7)
    figure.suptitle(title)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path
