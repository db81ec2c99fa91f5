"""Shared preprocessing: mode conversion, resize policies, uint8 tensors, on-device normalization."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from models import PreprocessingSpec
from models.preprocessing import convert_mode, normalize, prepare_image, resize_and_crop

GRAY = PreprocessingSpec(input_size=28, channels=1, resize_size=28, resize_mode="stretch", mean=[0.5], std=[0.25])
RGB = PreprocessingSpec(input_size=224, channels=3, resize_size=256, mean=[0.5] * 3, std=[0.25] * 3)


@pytest.mark.parametrize("mode", ["L", "RGB", "RGBA", "LA", "P", "CMYK", "1", "I;16", "I", "F", "YCbCr"])
@pytest.mark.parametrize("channels", [1, 3])
def test_every_mode_converts_to_the_models_channels(mode: str, channels: int) -> None:
    image = Image.new("RGB", (10, 6), (200, 100, 50)).convert(mode)
    converted = convert_mode(image, channels)
    assert converted.mode == ("L" if channels == 1 else "RGB")
    assert converted.size == (10, 6)


def test_sixteen_bit_images_are_scaled_by_their_range_not_clipped() -> None:
    array = np.array([[0, 1000], [30000, 65535]], dtype=np.uint16)
    image = Image.fromarray(array)
    assert image.mode.startswith("I;16")
    out = np.asarray(convert_mode(image, 1))
    assert out[0, 0] == 0 and out[1, 1] == 255 and 0 < out[1, 0] < 255


def test_transparent_pixels_become_white() -> None:
    image = Image.new("RGBA", (4, 4), (0, 0, 0, 0))
    assert np.asarray(convert_mode(image, 3)).min() == 255


def test_shorter_side_resize_then_center_crop_keeps_the_center() -> None:
    image = Image.new("RGB", (600, 300), (0, 0, 0))
    image.paste((255, 0, 0), (250, 100, 350, 200))  # a red square in the middle
    out = resize_and_crop(image, RGB)
    assert out.size == (224, 224)
    assert out.getpixel((112, 112)) == (255, 0, 0)
    assert out.getpixel((0, 0)) == (0, 0, 0)


def test_prepare_image_gives_uint8_chw_at_input_size() -> None:
    tensor = prepare_image(Image.new("RGB", (40, 30), (10, 20, 30)), GRAY)
    assert tensor.dtype == torch.uint8 and tensor.shape == (1, 28, 28)
    tensor = prepare_image(Image.new("L", (500, 400), 7), RGB)
    assert tensor.shape == (3, 224, 224) and int(tensor[0, 0, 0]) == 7


def test_normalize_uses_mean_and_std_in_pixel_units() -> None:
    batch = torch.tensor([[[[0, 255]]]], dtype=torch.uint8)
    out = normalize(batch, GRAY)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, torch.tensor([[[[-2.0, 2.0]]]]))
    assert normalize(batch, GRAY, dtype=torch.bfloat16).dtype == torch.bfloat16
