"""A checkpoint's golden images: a few held-out encoded images with the fp32 model's answers to them.

They travel inside the checkpoint file, as four tensors beside the weights (``golden.*``), so the file's
content hash covers them and no second file can go missing:

- ``golden.data``: every image's encoded bytes (PNG, JPEG, ...), concatenated (uint8);
- ``golden.offsets``: where each image starts and ends in ``golden.data`` (int64, N + 1 values);
- ``golden.probs``: the fp32 eager model's class probabilities for each image, through the serving
  preprocessing (float32, N x num_classes);
- ``golden.targets``: each image's true class where known, else -1 (int64, N).

Written by ``resnet-train`` (held-out test images), ``resnet-convert --golden-dir`` and ``resnet-golden``;
read by ``--optimize`` (a faster variant must agree with these answers) and the model checks.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from torch import Tensor

from models.metadata import CheckpointError

__all__ = ["GOLDEN_PREFIX", "GoldenSet", "is_golden_key", "read_golden"]

GOLDEN_PREFIX = "golden."
_KEYS = ("data", "offsets", "probs", "targets")


def is_golden_key(key: str) -> bool:
    """Whether a checkpoint tensor belongs to the golden set rather than to the model's weights."""
    return key.startswith(GOLDEN_PREFIX)


@dataclass
class GoldenSet:
    """Encoded images, the fp32 reference probabilities for them, and their true classes (-1: unknown)."""

    images: list[bytes]
    probs: Tensor
    targets: list[int]

    def __post_init__(self) -> None:
        if not self.images:
            raise CheckpointError("a golden set needs at least one image")
        if self.probs.ndim != 2 or self.probs.shape[0] != len(self.images) or len(self.targets) != len(self.images):
            raise CheckpointError(
                f"golden set: {len(self.images)} images, probabilities of shape {tuple(self.probs.shape)} "
                f"and {len(self.targets)} targets do not match"
            )

    def __len__(self) -> int:
        return len(self.images)

    @property
    def num_classes(self) -> int:
        """The width of the reference probabilities (the model's number of classes)."""
        return int(self.probs.shape[1])

    def to_tensors(self) -> dict[str, Tensor]:
        """The ``golden.*`` tensors stored in the checkpoint."""
        sizes = torch.tensor([0, *(len(image) for image in self.images)], dtype=torch.int64)
        data = torch.frombuffer(bytearray(b"".join(self.images)), dtype=torch.uint8)
        return {
            f"{GOLDEN_PREFIX}data": data,
            f"{GOLDEN_PREFIX}offsets": sizes.cumsum(0),
            f"{GOLDEN_PREFIX}probs": self.probs.detach().float().cpu().contiguous(),
            f"{GOLDEN_PREFIX}targets": torch.tensor(self.targets, dtype=torch.int64),
        }

    @classmethod
    def from_tensors(cls, tensors: dict[str, Tensor]) -> GoldenSet:
        """The inverse of ``to_tensors``; raises ``CheckpointError`` on an inconsistent set."""
        data, offsets = tensors[f"{GOLDEN_PREFIX}data"], tensors[f"{GOLDEN_PREFIX}offsets"].tolist()
        if (
            offsets[0] != 0
            or offsets[-1] != data.numel()
            or any(b < a for a, b in zip(offsets, offsets[1:], strict=False))
        ):
            raise CheckpointError("golden set: image offsets do not fit the image data")
        blob = data.numpy().tobytes()
        images = [blob[start:end] for start, end in zip(offsets, offsets[1:], strict=False)]
        return cls(images, tensors[f"{GOLDEN_PREFIX}probs"].float(), tensors[f"{GOLDEN_PREFIX}targets"].tolist())


def read_golden(path: str | os.PathLike[str]) -> GoldenSet | None:
    """The golden set stored in the checkpoint at ``path``, or ``None`` when it has none."""
    try:
        with safe_open(str(Path(path)), framework="pt") as handle:
            keys = set(handle.keys())
            names = [f"{GOLDEN_PREFIX}{key}" for key in _KEYS]
            if not all(name in keys for name in names):
                return None
            tensors = {name: handle.get_tensor(name) for name in names}
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{path}: golden images unreadable: {exc}") from None
    return GoldenSet.from_tensors(tensors)
