"""Image -> model input, as a checkpoint's ``PreprocessingSpec`` prescribes.

Shared by training (eval transform, in-memory datasets), ``resnet-eval`` and the service, so the
three cannot drift. Images become uint8 CHW tensors on the CPU; normalization happens in batch on
the model's device (``normalize``).
"""

from __future__ import annotations

import functools

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from models.metadata import PreprocessingSpec

__all__ = ["convert_mode", "resize_and_crop", "prepare_image", "to_uint8_tensor", "normalize"]

_RESAMPLE = {
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "nearest": Image.Resampling.NEAREST,
}


def convert_mode(image: Image.Image, channels: int) -> Image.Image:
    """Convert any Pillow mode to ``L`` (channels=1) or ``RGB`` (channels=3).

    Transparent pixels are composited onto white; 16/32-bit integer and float images are scaled to
    8 bits by their own range; palette, CMYK, YCbCr, LAB, 1-bit and LA images are converted.
    """
    target = "L" if channels == 1 else "RGB"
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        array = np.asarray(image, dtype=np.float32)
        low, high = float(array.min()), float(array.max())
        scaled = (array - low) * (255.0 / (high - low)) if high > low else np.zeros_like(array)
        image = Image.fromarray(scaled.round().astype(np.uint8))
    if image.mode == "P":
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, rgba)
    if image.mode != target:
        image = image.convert(target)
    return image


def resize_and_crop(image: Image.Image, spec: PreprocessingSpec) -> Image.Image:
    """Resize per ``spec.resize_mode`` and center-crop to ``spec.input_size`` square."""
    size = spec.input_size
    resample = _RESAMPLE[spec.interpolation]
    if spec.resize_mode == "stretch":
        return image if image.size == (size, size) else image.resize((size, size), resample)
    width, height = image.size
    scale = spec.resize_size / min(width, height)
    new_w, new_h = max(size, round(width * scale)), max(size, round(height * scale))
    if (new_w, new_h) != (width, height):
        image = image.resize((new_w, new_h), resample)
    left, top = (new_w - size) // 2, (new_h - size) // 2
    if (left, top, new_w, new_h) == (0, 0, size, size):
        return image
    return image.crop((left, top, left + size, top + size))


def to_uint8_tensor(image: Image.Image) -> Tensor:
    """An ``L`` or ``RGB`` image as a contiguous uint8 tensor of shape (C, H, W) (a copy)."""
    array = np.array(image, dtype=np.uint8)  # writable copy: PIL's buffer is read-only
    tensor = torch.from_numpy(array)
    return tensor.unsqueeze(0) if array.ndim == 2 else tensor.permute(2, 0, 1).contiguous()


def prepare_image(image: Image.Image, spec: PreprocessingSpec) -> Tensor:
    """Decoded image -> uint8 (C, input_size, input_size) tensor: mode, resize, crop."""
    return to_uint8_tensor(resize_and_crop(convert_mode(image, spec.channels), spec))


@functools.lru_cache(maxsize=64)
def _pixel_mean_std(mean: tuple[float, ...], std: tuple[float, ...], device: torch.device) -> tuple[Tensor, Tensor]:
    shape = (1, len(mean), 1, 1)
    as_tensor = functools.partial(torch.tensor, device=device, dtype=torch.float32)
    return (as_tensor(mean).view(shape) * 255.0, as_tensor(std).view(shape) * 255.0)


def normalize(
    batch: Tensor,
    spec: PreprocessingSpec,
    dtype: torch.dtype = torch.float32,
    memory_format: torch.memory_format = torch.preserve_format,
) -> Tensor:
    """uint8 (N, C, H, W) batch -> normalized float batch on the batch's own device.

    Three tensor ops (the mean and std tensors are cached per device): on a server every op is a
    round trip through the GIL. ``memory_format`` (e.g. ``torch.channels_last``) is applied by the
    float conversion itself, without a separate copy.
    """
    mean, std = _pixel_mean_std(tuple(spec.mean), tuple(spec.std), batch.device)
    x = batch.to(dtype=torch.float32, memory_format=memory_format)
    return ((x - mean) / std).to(dtype)
