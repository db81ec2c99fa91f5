"""Where a model runs and at what precision: one resolver shared by training, evaluation and serving."""

from __future__ import annotations

from typing import Literal, get_args

import torch

__all__ = ["DTYPES", "PRECISIONS", "Precision", "precision_name", "resolve_device", "resolve_precision"]

#: Inference precisions: the weights' and activations' dtype.
Precision = Literal["fp32", "fp16", "bf16"]
PRECISIONS: tuple[str, ...] = get_args(Precision)
DTYPES: dict[str, torch.dtype] = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` -> CUDA when available, else CPU; ``cpu``, ``cuda`` or ``cuda:N`` (which must exist).

    Raises ``ValueError`` with a one-line reason for a malformed name or a missing device.
    """
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ValueError(f"device {name!r} is not one of auto, cpu, cuda, cuda:N") from None
    if device.type not in ("cpu", "cuda"):
        raise ValueError(f"device {name!r} is not one of auto, cpu, cuda, cuda:N")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {name!r} requested but CUDA is not available")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ValueError(f"device {name!r} does not exist ({torch.cuda.device_count()} CUDA devices)")
    return device


def resolve_precision(precision: str, device: torch.device) -> torch.dtype:
    """The dtype for ``precision`` on ``device``; raises ``ValueError`` where the device lacks it."""
    if precision not in DTYPES:
        raise ValueError(f"precision must be one of {list(PRECISIONS)}, got {precision!r}")
    if precision == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise ValueError(f"bf16 is not supported on {torch.cuda.get_device_name(device)}")
    return DTYPES[precision]


def precision_name(dtype: torch.dtype) -> str:
    """``torch.float16`` -> ``fp16`` (the inverse of ``DTYPES``); ``ValueError`` for a dtype without a name."""
    for name, candidate in DTYPES.items():
        if candidate == dtype:
            return name
    raise ValueError(f"{dtype} is not an inference precision ({', '.join(PRECISIONS)})")
