"""Golden images through the serving path: record the fp32 model's answers, and measure agreement with them.

``record_golden`` is what ``resnet-train``, ``resnet-convert --golden-dir`` and ``resnet-golden`` call to write
a checkpoint's golden set: each image goes through the service's own decoding and preprocessing
(``app.preprocess``), then the fp32 eager model. ``agreement`` compares another model's probabilities (a
faster variant's, a new version's) with those answers.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import torch
from PIL import Image
from torch import Tensor, nn

from app.preprocess import DecodeLimits, image_bytes_to_tensor
from models.golden import GoldenSet
from models.metadata import PreprocessingSpec
from models.preprocessing import normalize

__all__ = ["Agreement", "agreement", "golden_inputs", "png_bytes", "predict_all", "record_golden"]

#: Images per forward when recording or checking a golden set.
CHUNK = 32


def png_bytes(image: Tensor) -> bytes:
    """A uint8 (C, H, W) tensor (C = 1 or 3), losslessly encoded as PNG."""
    array = image.permute(1, 2, 0).numpy() if image.shape[0] == 3 else image[0].numpy()
    out = io.BytesIO()
    Image.fromarray(array).save(out, format="PNG")
    return out.getvalue()


def golden_inputs(images: Sequence[bytes], spec: PreprocessingSpec) -> Tensor:
    """The golden images decoded and preprocessed as the service does: a uint8 (N, C, H, W) batch."""
    limits = DecodeLimits()
    return torch.stack([image_bytes_to_tensor(data, spec, limits=limits) for data in images])


@torch.inference_mode()
def _fp32_probs(model: nn.Module, inputs: Tensor, spec: PreprocessingSpec) -> Tensor:
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        chunks = [
            torch.softmax(model(normalize(chunk.to(device), spec, torch.float32)).float(), dim=1).cpu()
            for chunk in inputs.split(CHUNK)
        ]
    finally:
        model.train(was_training)
    return torch.cat(chunks)


def record_golden(
    model: nn.Module, spec: PreprocessingSpec, images: Sequence[bytes], targets: Sequence[int] | None = None
) -> GoldenSet:
    """``images`` with the fp32 eager ``model``'s probabilities for them, through the serving preprocessing."""
    inputs = golden_inputs(images, spec)
    probs = _fp32_probs(model, inputs, spec)
    return GoldenSet(list(images), probs, list(targets) if targets is not None else [-1] * len(images))


@dataclass(frozen=True)
class Agreement:
    """How closely a model's answers match the reference (fp32 eager) answers on the same images."""

    images: int
    top1: float  # share of images whose top-1 class is the reference's
    top5_overlap: float  # mean share of the reference's top-5 classes also in the model's top 5
    max_prob_diff: float  # largest absolute difference of any class probability

    def to_dict(self) -> dict[str, float | int]:
        """JSON-ready, rounded for reading."""
        out = asdict(self)
        return {key: round(value, 6) if isinstance(value, float) else value for key, value in out.items()}


def agreement(reference: Tensor, probs: Tensor) -> Agreement:
    """Compare (N, classes) probabilities with the reference's, image by image."""
    if reference.shape != probs.shape:
        raise ValueError(f"probabilities of shape {tuple(probs.shape)} against a reference of {tuple(reference.shape)}")
    reference, probs = reference.float(), probs.float()
    k = min(5, reference.shape[1])
    top1 = (reference.argmax(1) == probs.argmax(1)).float().mean().item()
    ref_top, top = reference.topk(k, dim=1).indices, probs.topk(k, dim=1).indices
    overlap = (ref_top.unsqueeze(2) == top.unsqueeze(1)).any(2).float().mean().item()
    diff = (reference - probs).abs().nan_to_num(nan=1.0).max().item()
    return Agreement(len(reference), top1, overlap, diff)


def predict_all(forward: Callable[[Tensor], Tensor], inputs: Tensor) -> Tensor:
    """``forward`` (uint8 batch -> probabilities) over ``inputs`` in chunks, on the CPU."""
    return torch.cat([forward(chunk).float().cpu() for chunk in inputs.split(CHUNK)])
