"""The architecture table: layers, blocks per stage, parameters and FLOPs, computed from the models."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from models import architecture_info, create_model, list_models

__all__ = ["PAPER_GFLOPS", "PAPER_PARAMS_M", "architecture_rows", "markdown_table"]

# The paper's Table 1 (multiply-adds at 224x224) and Table 6 (CIFAR parameter counts).
PAPER_GFLOPS = {"resnet18": 1.8, "resnet34": 3.6, "resnet50": 3.8, "resnet101": 7.6, "resnet152": 11.3}
PAPER_PARAMS_M = {"resnet20": 0.27, "resnet32": 0.46, "resnet44": 0.66, "resnet56": 0.85, "resnet110": 1.7}


def weighted_layers(model: nn.Module) -> int:
    """Convolutions and fully connected layers on the main path (projection shortcuts not counted)."""
    return sum(
        isinstance(m, nn.Conv2d | nn.Linear) and ".downsample." not in f".{name}." for name, m in model.named_modules()
    )


def blocks_per_stage(model: nn.Module) -> list[int]:
    """Residual blocks in each ``layerN`` stage."""
    stages = [getattr(model, f"layer{i}") for i in range(1, 5) if hasattr(model, f"layer{i}")]
    return [len(stage) if isinstance(stage, nn.Sequential) else 1 for stage in stages]


def multiply_adds(model: nn.Module, size: int) -> float:
    """Multiply-adds of one forward at ``size`` x ``size`` (the paper's "FLOPs")."""
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(torch.zeros(1, 3, size, size))
    return counter.get_total_flops() / 2


def architecture_rows(names: list[str] | None = None) -> list[dict[str, Any]]:
    """One row per architecture, with the paper's figure and our ratio to it where the paper gives one."""
    rows = []
    for name in names or list_models():
        info = architecture_info(name)
        model = create_model(name, in_channels=3).eval()
        gflops = multiply_adds(model, info.native_input_size) / 1e9
        params_m = sum(p.numel() for p in model.parameters()) / 1e6
        row: dict[str, Any] = {
            "name": name,
            "family": info.family,
            "shortcuts": info.residual,
            "layers": weighted_layers(model),
            "blocks_per_stage": blocks_per_stage(model),
            "params_m": round(params_m, 3),
            "input": info.native_input_size,
            "gflops": round(gflops, 3),
        }
        if name in PAPER_GFLOPS:
            row["paper"] = f"{PAPER_GFLOPS[name]} GFLOPs"
            row["ratio_to_paper"] = round(gflops / PAPER_GFLOPS[name], 3)
        elif name in PAPER_PARAMS_M:
            row["paper"] = f"{PAPER_PARAMS_M[name]}M params"
            row["ratio_to_paper"] = round(params_m / PAPER_PARAMS_M[name], 3)
        rows.append(row)
    return rows


def markdown_table(rows: list[dict[str, Any]]) -> str:
    """The rows as a Markdown table."""
    lines = [
        "| model | family | shortcuts | layers | blocks/stage | params (M) | input | GFLOPs (MACs) | paper | ratio |",
        "|---|---|---|---:|---|---:|---:|---:|---|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['name']} | {r['family']} | {'yes' if r['shortcuts'] else 'no'} | {r['layers']} | "
            f"{'/'.join(map(str, r['blocks_per_stage']))} | {r['params_m']:.3f} | {r['input']} | {r['gflops']:.3f} | "
            f"{r.get('paper', '')} | {r.get('ratio_to_paper', '')} |"
        )
    return "\n".join(lines) + "\n"
