"""One training epoch and one evaluation pass, as plain functions with explicit arguments."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from tqdm import tqdm

from models import PreprocessingSpec
from models.preprocessing import normalize
from training.distributed import all_reduce_sum

__all__ = ["EpochStats", "EvalStats", "train_one_epoch", "evaluate"]


@dataclass
class EpochStats:
    """Mean loss and accuracy over one pass, and how fast it went (all processes together)."""

    loss: float
    accuracy: float
    images: int
    seconds: float

    @property
    def images_per_second(self) -> float:
        return self.images / self.seconds if self.seconds > 0 else 0.0


@dataclass
class EvalStats(EpochStats):
    """Evaluation figures plus the confusion matrix (rows: true class, columns: predicted).

    ``predictions``: this process's top-1 class per image in loader order, when asked for (``keep_predictions``).
    """

    confusion: Tensor | None = None
    predictions: Tensor | None = None

    def per_class_accuracy(self) -> list[float]:
        assert self.confusion is not None
        totals = self.confusion.sum(dim=1).clamp(min=1)
        return (self.confusion.diagonal() / totals).tolist()


def autocast(device: torch.device, amp_dtype: torch.dtype | None) -> contextlib.AbstractContextManager[None]:
    """Mixed-precision context for ``amp_dtype`` (bf16/fp16), or a no-op for full precision."""
    if amp_dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=amp_dtype)


def _to_input(images: Tensor, device: torch.device, spec: PreprocessingSpec, channels_last: bool) -> Tensor:
    images = normalize(images.to(device, non_blocking=True), spec)
    return images.contiguous(memory_format=torch.channels_last) if channels_last else images


def _progress(loader: Iterable[tuple[Tensor, Tensor]], show: bool, description: str) -> tqdm:
    return tqdm(loader, desc=description, disable=not show, leave=False, dynamic_ncols=True, mininterval=1.0)


def train_one_epoch(
    model: nn.Module,
    loader: Iterable[tuple[Tensor, Tensor]],
    optimizer: torch.optim.Optimizer,
    criterion: nn.Module,
    *,
    device: torch.device,
    spec: PreprocessingSpec,
    augment: Callable[[Tensor], Tensor] | None = None,
    amp_dtype: torch.dtype | None = None,
    scaler: torch.amp.GradScaler | None = None,
    step_scheduler: Callable[[], None] | None = None,
    channels_last: bool = False,
    show_progress: bool = False,
    description: str = "train",
) -> EpochStats:
    """Train for one pass over ``loader`` (uint8 image batches); returns loss, accuracy and speed."""
    model.train()
    loss_sum, correct, seen = 0.0, 0, 0
    start = time.perf_counter()
    bar = _progress(loader, show_progress, description)
    for images, targets in bar:
        images, targets = images.to(device, non_blocking=True), targets.to(device, non_blocking=True)
        if augment is not None:
            images = augment(images)
        inputs = _to_input(images, device, spec, channels_last)
        with autocast(device, amp_dtype):
            logits = model(inputs)
            loss = criterion(logits, targets)
        optimizer.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        else:
            loss.backward()
            optimizer.step()
        if step_scheduler is not None:
            step_scheduler()
        batch = targets.shape[0]
        loss_sum += loss.item() * batch
        correct += (logits.argmax(dim=1) == targets).sum().item()
        seen += batch
        elapsed = time.perf_counter() - start
        bar.set_postfix(loss=f"{loss_sum / seen:.4f}", acc=f"{correct / seen:.4f}", img_s=f"{seen / elapsed:.0f}")
    seconds = time.perf_counter() - start
    total_loss, total_correct, total_seen = all_reduce_sum([loss_sum, correct, seen], device)
    return EpochStats(total_loss / max(total_seen, 1), total_correct / max(total_seen, 1), int(total_seen), seconds)


@torch.inference_mode()
def evaluate(
    model: nn.Module,
    loader: Iterable[tuple[Tensor, Tensor]],
    criterion: nn.Module,
    *,
    device: torch.device,
    spec: PreprocessingSpec,
    num_classes: int,
    amp_dtype: torch.dtype | None = None,
    channels_last: bool = False,
    show_progress: bool = False,
    keep_predictions: bool = False,
) -> EvalStats:
    """Loss, accuracy and confusion matrix of ``model`` on ``loader`` (summed over processes).

    ``keep_predictions``: also return this process's top-1 class of each image, in loader order.
    """
    model.eval()
    confusion = torch.zeros(num_classes, num_classes, dtype=torch.int64)
    kept: list[Tensor] = []
    loss_sum, seen = 0.0, 0
    start = time.perf_counter()
    for images, targets in _progress(loader, show_progress, "eval"):
        inputs = _to_input(images, device, spec, channels_last)
        targets = targets.to(device)
        with autocast(device, amp_dtype):
            logits = model(inputs)
        loss_sum += criterion(logits.float(), targets).item() * targets.shape[0]
        seen += targets.shape[0]
        top1 = logits.argmax(dim=1).cpu()
        if keep_predictions:
            kept.append(top1)
        pairs = targets.cpu() * num_classes + top1
        confusion += torch.bincount(pairs, minlength=num_classes * num_classes).view(num_classes, num_classes)
    seconds = time.perf_counter() - start
    flat = all_reduce_sum([loss_sum, float(seen), *confusion.flatten().tolist()], device)
    loss_sum, seen = flat[0], int(flat[1])
    confusion = torch.tensor(flat[2:], dtype=torch.int64).view(num_classes, num_classes)
    accuracy = confusion.diagonal().sum().item() / max(seen, 1)
    predictions = torch.cat([torch.zeros(0, dtype=torch.int64), *kept]) if keep_predictions else None
    return EvalStats(loss_sum / max(seen, 1), accuracy, seen, seconds, confusion, predictions)
