"""The in-process inference path every measured system shares: checkpoint -> model, bytes -> top-k.

The ceiling, the drift probe and both peers use exactly these functions, so a difference between
them and our service is the serving layer, not the model: the same ``load_checkpoint`` weights, the
same ``prepare_image`` + ``normalize`` preprocessing, the same BN folding, the same precision, memory format and torch
thread count.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torch import Tensor, nn

from models import CheckpointMetadata, load_checkpoint
from models.fuse import fold_batchnorm
from models.preprocessing import normalize, prepare_image

__all__ = ["DTYPES", "LoadedModel", "load_model", "decode_and_prepare", "set_threads"]

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def set_threads(threads: int) -> None:
    """Torch intra-op threads for the forward (the same number every system gets)."""
    torch.set_num_threads(max(1, threads))


def decode_and_prepare(data: bytes, metadata: CheckpointMetadata) -> Tensor:
    """Encoded image bytes -> uint8 (C, H, W) tensor: Pillow decode, then ``prepare_image``."""
    with Image.open(io.BytesIO(data)) as image:
        image.load()
        return prepare_image(image, metadata.preprocessing)


@dataclass
class LoadedModel:
    """A checkpoint's model on its device at a precision, with its metadata."""

    model: nn.Module
    metadata: CheckpointMetadata
    device: torch.device
    dtype: torch.dtype
    channels_last: bool

    @torch.inference_mode()
    def forward(self, batch: Tensor) -> Tensor:
        """uint8 (N, C, H, W) on the CPU -> float32 class probabilities on the device (not synchronised)."""
        if self.device.type == "cuda":
            batch = batch.pin_memory().to(self.device, non_blocking=True)
        memory_format = torch.channels_last if self.channels_last else torch.preserve_format
        x = normalize(batch, self.metadata.preprocessing, self.dtype, memory_format)
        return torch.softmax(self.model(x).float(), dim=1)

    def synchronize(self) -> None:
        """Wait for queued device work (a no-op on the CPU)."""
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def top_k(self, probs: Tensor, k: int = 5) -> list[list[dict[str, Any]]]:
        """Probabilities -> per image, its ``k`` best labels with scores."""
        scores, indices = probs.topk(min(k, probs.shape[1]), dim=1)
        labels = self.metadata.labels
        return [
            [{"label": labels[i], "index": i, "score": s} for s, i in zip(row_s, row_i, strict=True)]
            for row_s, row_i in zip(scores.tolist(), indices.tolist(), strict=True)
        ]

    def zeros(self, batch_size: int) -> Tensor:
        """A uint8 input batch of ``batch_size`` black images (for warm-up)."""
        spec = self.metadata.preprocessing
        return torch.zeros((batch_size, spec.channels, spec.input_size, spec.input_size), dtype=torch.uint8)


def load_model(
    path: str | Path, *, device: str = "cpu", precision: str = "fp32", channels_last: bool = True
) -> LoadedModel:
    """Load a checkpoint the way the service does: eval mode, BN folded, ``precision``, optional channels_last."""
    dev = torch.device(device)
    dtype = DTYPES[precision]
    model, metadata = load_checkpoint(path, device=dev)
    model = fold_batchnorm(model.eval().requires_grad_(False)).to(dtype=dtype)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    return LoadedModel(model, metadata, dev, dtype, channels_last)
