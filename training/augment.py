"""Batched data augmentation on the training device, for in-memory uint8 datasets.

Per-sample random crop (with zero padding), horizontal flip and random erasing, done with tensor
indexing on the whole batch: no per-image Python or PIL work, so the CPU cores train instead.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["random_crop", "random_flip", "random_erase"]


def random_crop(batch: Tensor, padding: int, generator: torch.Generator | None = None) -> Tensor:
    """Pad each (N, C, H, W) image by ``padding`` zeros and crop back to H x W at a random offset."""
    if padding <= 0:
        return batch
    n, _, h, w = batch.shape
    padded = torch.nn.functional.pad(batch, (padding, padding, padding, padding))
    dy = torch.randint(0, 2 * padding + 1, (n,), device=batch.device, generator=generator)
    dx = torch.randint(0, 2 * padding + 1, (n,), device=batch.device, generator=generator)
    rows = (dy[:, None] + torch.arange(h, device=batch.device))[:, None, :, None]  # N,1,H,1
    cols = (dx[:, None] + torch.arange(w, device=batch.device))[:, None, None, :]  # N,1,1,W
    index_n = torch.arange(n, device=batch.device)[:, None, None, None]
    index_c = torch.arange(batch.shape[1], device=batch.device)[None, :, None, None]
    return padded[index_n, index_c, rows, cols]


def random_flip(batch: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Mirror a random half of the batch left-right."""
    flip = torch.rand(batch.shape[0], device=batch.device, generator=generator) < 0.5
    return torch.where(flip[:, None, None, None], batch.flip(-1), batch)


def random_erase(
    batch: Tensor,
    probability: float,
    scale: tuple[float, float] = (0.02, 0.25),
    generator: torch.Generator | None = None,
) -> Tensor:
    """Random Erasing (Zhong et al.): zero a random rectangle in a ``probability`` share of images."""
    if probability <= 0:
        return batch
    n, _, h, w = batch.shape
    device = batch.device
    area = torch.empty(n, device=device).uniform_(*scale, generator=generator) * h * w
    log_ratio = torch.empty(n, device=device).uniform_(-1.2, 1.2, generator=generator)  # aspect 0.3..3.3
    ratio = log_ratio.exp()
    eh = (area * ratio).sqrt().round().clamp(1, h).long()
    ew = (area / ratio).sqrt().round().clamp(1, w).long()
    top = (torch.rand(n, device=device, generator=generator) * (h - eh + 1)).long()
    left = (torch.rand(n, device=device, generator=generator) * (w - ew + 1)).long()
    ys = torch.arange(h, device=device)[None, :]
    xs = torch.arange(w, device=device)[None, :]
    in_rows = (ys >= top[:, None]) & (ys < (top + eh)[:, None])  # N,H
    in_cols = (xs >= left[:, None]) & (xs < (left + ew)[:, None])  # N,W
    chosen = torch.rand(n, device=device, generator=generator) < probability
    mask = in_rows[:, :, None] & in_cols[:, None, :] & chosen[:, None, None]  # N,H,W
    return batch.masked_fill(mask[:, None, :, :], 0)
