"""One loaded model, LitAPI-sized: load, preprocess, predict, postprocess.

Knows nothing of HTTP or queues. Inputs arrive as uint8 CHW tensors; they are stacked, moved to the
device and normalized there in batch (``models.preprocessing.normalize``), run at the configured
precision and memory format, and come back as softmax top-k lists.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torch import Tensor

from app.cuda_staging import PinnedStager
from app.errors import InferenceFailed
from app.preprocess import (
    DEFAULT_MAX_PIXELS,
    DecodeLimits,
    PixelBudget,
    image_bytes_to_tensor,
    image_to_tensor,
    plain_png_to_tensor,
)
from models import CheckpointMetadata, load_checkpoint
from models.device import precision_name, resolve_precision
from models.fuse import fold_batchnorm
from models.preprocessing import normalize

#: ``app.preprocess``'s default limits (what ``Engine.preprocess`` applies unless told otherwise).
DEFAULT_LIMITS = DecodeLimits()

__all__ = ["Engine", "candidate_batch_sizes", "pick_batch_cap"]

log = logging.getLogger("app.engine")


def candidate_batch_sizes(max_batch_size: int) -> list[int]:
    """Powers of two up to ``max_batch_size``, and ``max_batch_size`` itself."""
    sizes, n = [], 1
    while n < max_batch_size:
        sizes.append(n)
        n *= 2
    return [*sizes, max_batch_size]


def pick_batch_cap(per_image_s: dict[int, float], tolerance: float = 0.05) -> int:
    """The largest batch size whose time per image is within ``tolerance`` of the best one."""
    best = min(per_image_s.values())
    return max(size for size, t in per_image_s.items() if t <= best * (1 + tolerance))


@dataclass
class Engine:
    """A model on its device, with the metadata that says how to feed and label it."""

    name: str
    model: Callable[[Tensor], Tensor]  # normalized batch -> logits: an ``nn.Module``, or a variant's runtime
    metadata: CheckpointMetadata
    device: torch.device
    dtype: torch.dtype
    channels_last: bool = True
    path: Path | None = None
    batch_cap: int = 1
    warmup_ms: dict[int, float] = field(default_factory=dict)
    variant: str = "eager"  # which ``app.variants`` variant ``model`` is (``--optimize``)
    variant_precision: str | None = None  # what the variant computes in, where ``dtype`` does not say (int8)
    optimization: dict[str, Any] | None = None  # ``--optimize``'s report (``app.optimize.OptimizationReport``)
    stager: PinnedStager | None = field(default=None, repr=False)  # CUDA only: host-to-device copies

    @classmethod
    def load(cls, path: Path, *, device: torch.device, precision: str = "fp32", channels_last: bool = True) -> Engine:
        """Load a checkpoint onto ``device`` in eval mode, BN folded into convs, at ``precision`` and memory format."""
        dtype = resolve_precision(precision, device)
        if device.type == "cuda":
            torch.backends.cudnn.benchmark = True  # fixed input shapes: let cuDNN pick the fastest kernels once
        model, metadata = load_checkpoint(path, device=device)
        model = fold_batchnorm(model.eval().requires_grad_(False)).to(dtype=dtype)
        if channels_last:
            model = model.to(memory_format=torch.channels_last)
        return cls(path.stem, model, metadata, device, dtype, channels_last, path)

    @property
    def device_name(self) -> str:
        """The device as logs, metrics and ``/models`` report it: ``cpu``, ``cuda:0``."""
        return str(self.device)

    @property
    def precision(self) -> str:
        """``fp32``, ``fp16``, ``bf16``, or ``int8`` for a quantized variant."""
        return self.variant_precision or precision_name(self.dtype)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of one preprocessed image."""
        spec = self.metadata.preprocessing
        return (spec.channels, spec.input_size, spec.input_size)

    def blank_batch(self, size: int) -> Tensor:
        """``size`` black uint8 images of the model's input shape (warm-up and timing input)."""
        return torch.zeros((size, *self.input_shape), dtype=torch.uint8)

    def preprocess(
        self, data: bytes, *, limits: DecodeLimits = DEFAULT_LIMITS, budget: PixelBudget | None = None
    ) -> Tensor:
        """Image bytes -> uint8 (C, H, W) tensor on the CPU (raises ``InvalidImage``, ``DecodeBudgetExceeded``)."""
        return image_bytes_to_tensor(data, self.metadata.preprocessing, limits=limits, budget=budget)

    def decode(self, image: Image.Image, *, budget: PixelBudget | None = None) -> Tensor:
        """An image opened by ``app.preprocess.open_image`` -> uint8 (C, H, W) tensor."""
        return image_to_tensor(image, self.metadata.preprocessing, budget=budget)

    def decode_plain_png(self, data: bytes, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> Tensor | None:
        """A PNG already in the model's input format -> its pixels; ``None`` for any other image."""
        return plain_png_to_tensor(data, self.metadata.preprocessing, max_pixels=max_pixels)

    @torch.inference_mode()
    def predict(self, images: list[Tensor] | Tensor) -> Tensor:
        """uint8 images -> class probabilities, float32 (N, num_classes), on the device."""
        batch = torch.stack(images) if isinstance(images, list) else images
        if self.device.type == "cuda":
            if self.stager is None:
                self.stager = PinnedStager(self.device)
            batch = self.stager.to_device(batch)
        memory_format = torch.channels_last if self.channels_last else torch.preserve_format
        x = normalize(batch, self.metadata.preprocessing, self.dtype, memory_format)
        logits = self.model(x)
        return torch.softmax(logits.float(), dim=1)

    def synchronize(self) -> None:
        """Wait for the device's queued work (a no-op on the CPU): for timing ``predict`` from outside."""
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def postprocess(self, probs: Tensor, top_ks: list[int]) -> list[list[dict[str, Any]]]:
        """Probabilities -> per image, its ``top_k`` predictions sorted by score."""
        k = min(max(top_ks), probs.shape[1])
        scores, indices = probs.topk(k, dim=1)
        labels = self.metadata.labels
        out = []
        for row_scores, row_indices, top_k in zip(scores.tolist(), indices.tolist(), top_ks, strict=True):
            pairs = zip(row_scores[:top_k], row_indices[:top_k], strict=True)
            out.append([{"label": labels[i], "index": i, "score": s} for s, i in pairs])
        return out

    def infer(self, items: list[tuple[Tensor, int]]) -> list[list[dict[str, Any]] | InferenceFailed]:
        """What the batcher runs: (image, top_k) pairs -> predictions, in order.

        An image whose scores are not finite (NaN or infinite logits, e.g. broken weights or an fp16
        overflow, make its whole softmax row NaN) gets an ``InferenceFailed`` of its own; when no image of
        the batch has finite scores, the batch fails.
        """
        probs = self.predict([image for image, _ in items])
        predictions = self.postprocess(probs, [top_k for _, top_k in items])
        bad = sum(1 for p in predictions if not math.isfinite(p[0]["score"]))
        if not bad:
            return list(predictions)
        if bad == len(items):
            raise InferenceFailed(f"the model produced non-finite scores for all {bad} images of the batch")
        log.error("the model produced non-finite scores for %d of %d images", bad, len(items))
        failed = InferenceFailed("the model produced non-finite scores for this image")
        return [p if math.isfinite(p[0]["score"]) else failed for p in predictions]

    def warmup(self, max_batch_size: int, *, autotune: bool = True, rounds: int = 3) -> int:
        """Run every batch size the batcher may form; with ``autotune``, cap batches at the best one.

        Each candidate size runs once untimed, then ``rounds`` timed runs interleaved across sizes
        (so a burst of load from another process hits all sizes alike); the fastest run counts.
        Sizes stop growing once one forward takes over a second while 25% worse per image than the
        best so far (big models on small CPUs). The cap is the largest size within 5% of the best
        time per image. Sets and returns ``batch_cap``.
        """
        batches: dict[int, Tensor] = {}
        best_per_image = float("inf")
        for size in candidate_batch_sizes(max_batch_size):
            batches[size] = self.blank_batch(size)
            elapsed = self._run(batches[size])
            best_per_image = min(best_per_image, elapsed / size)
            if autotune and elapsed > 1.0 and elapsed / size > 1.25 * best_per_image:
                del batches[size]  # clearly worse: never formed, so not worth timing again
                break
        timings: dict[int, list[float]] = {size: [] for size in batches}
        for _ in range(rounds):
            for size, batch in batches.items():
                timings[size].append(self._run(batch))
        self.warmup_ms = {size: round(min(t) * 1000, 3) for size, t in timings.items()}
        per_image = {size: min(t) / size for size, t in timings.items()}
        self.batch_cap = pick_batch_cap(per_image) if autotune else max_batch_size
        return self.batch_cap

    def prime_sizes(self) -> list[int]:
        """The batch sizes ``prime`` runs: every warm-up size up to ``batch_cap``."""
        return candidate_batch_sizes(self.batch_cap)

    def prime(self, size: int) -> None:
        """One forward at batch size ``size``; call it in the thread that will serve, for each of ``prime_sizes``.

        Warm-up runs in a loader thread, and torch keeps some per-thread state for a forward (its OpenMP
        team, oneDNN's primitive caches): when the forward thread met its batch sizes first under load,
        ResNet-50 batch-1 forwards stayed at 56 ms instead of 41 ms afterwards on the 2-core VM.
        """
        self._run(self.blank_batch(size))

    def _run(self, batch: Tensor) -> float:
        start = time.perf_counter()
        self.predict(batch).cpu()  # .cpu() waits for the device
        return time.perf_counter() - start
