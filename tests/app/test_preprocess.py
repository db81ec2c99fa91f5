"""app.preprocess: every image mode, EXIF orientation, draft decoding, and clean 400s for bad data."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
import torch
from PIL import Image, PngImagePlugin

from app.errors import DecodeBudgetExceeded, InvalidImage
from app.preprocess import (
    MAX_SIDE,
    DecodeLimits,
    PixelBudget,
    decode_image,
    draft_size,
    image_bytes_to_tensor,
    open_image,
    plain_png_to_tensor,
    plan_decode,
)
from models import PreprocessingSpec
from models.preprocessing import prepare_image

MAX_PIXELS = 40_000_000
LIMITS = DecodeLimits(MAX_PIXELS)


def encode(image: Image.Image, fmt: str, **kwargs) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format=fmt, **kwargs)
    return buf.getvalue()


def png_header_only(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims ``width`` x ``height`` (a decompression-bomb shape)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 64)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def modes() -> dict[str, Image.Image]:
    rgb = Image.new("RGB", (40, 30), (200, 30, 30))
    return {
        "RGB": rgb,
        "L": rgb.convert("L"),
        "LA": rgb.convert("LA"),
        "RGBA": rgb.convert("RGBA"),
        "P": rgb.convert("P"),
        "CMYK": rgb.convert("CMYK"),
        "1": rgb.convert("1"),
        "I;16": Image.fromarray(np.arange(1200, dtype=np.uint16).reshape(30, 40) * 50),
        "I": Image.fromarray(np.arange(1200, dtype=np.int32).reshape(30, 40)),
    }


@pytest.mark.parametrize("mode", list(modes()))
@pytest.mark.parametrize("channels", [1, 3])
def test_every_mode_becomes_a_uint8_tensor_of_the_models_shape(mode: str, channels: int) -> None:
    image = modes()[mode]
    fmt = "TIFF" if mode in ("CMYK", "I") else "PNG"
    spec = PreprocessingSpec(
        input_size=28, channels=channels, resize_size=32, mean=[0.5] * channels, std=[0.5] * channels
    )
    tensor = image_bytes_to_tensor(encode(image, fmt), spec, limits=LIMITS)
    assert tensor.dtype == torch.uint8
    assert tuple(tensor.shape) == (channels, 28, 28)


def test_cmyk_jpeg_decodes(rgb_spec: PreprocessingSpec) -> None:
    data = encode(Image.new("CMYK", (64, 64), (0, 255, 255, 0)), "JPEG")
    tensor = image_bytes_to_tensor(data, rgb_spec, limits=LIMITS)
    red, green, blue = (tensor[c].float().mean().item() for c in range(3))
    assert red > 150 > max(green, blue)  # C=0 M=Y=255: red


def test_transparent_pixels_become_white(gray_spec: PreprocessingSpec) -> None:
    data = encode(Image.new("RGBA", (28, 28), (0, 0, 0, 0)), "PNG")
    assert image_bytes_to_tensor(data, gray_spec, limits=LIMITS).min().item() == 255


def test_exif_orientation_is_applied(rgb_spec: PreprocessingSpec) -> None:
    # Stored 80 wide x 40 high, left half black, right half white; EXIF 6 = rotate 90 CW when shown.
    stored = Image.new("RGB", (80, 40), (0, 0, 0))
    stored.paste((255, 255, 255), (40, 0, 80, 40))
    exif = Image.Exif()
    exif[0x0112] = 6
    image = decode_image(encode(stored, "JPEG", exif=exif.tobytes()), rgb_spec, max_pixels=MAX_PIXELS)
    assert image.size == (40, 80)  # upright: taller than wide
    top, bottom = np.asarray(image.convert("L"))[[5, -5], 20]
    assert top < 50 and bottom > 200  # after a clockwise turn the left (black) half is on top


def test_big_jpeg_is_decoded_at_reduced_scale(gray_spec: PreprocessingSpec) -> None:
    data = encode(Image.new("RGB", (2048, 1536), (10, 200, 10)), "JPEG")
    assert plan_decode(open_image(data, max_pixels=MAX_PIXELS), gray_spec) == 256 * 192  # 1/8 still covers 32
    image = decode_image(data, gray_spec, max_pixels=MAX_PIXELS)
    assert image.size == (128, 96)  # then reduced by 2: twice the resize target (32) still kept on each side
    assert image.mode == "L"  # grayscale model: decoded straight to luminance


def test_a_large_png_is_reduced_before_mode_conversion_and_matches_the_plain_resize(
    gray_spec: PreprocessingSpec,
) -> None:
    stored = Image.linear_gradient("L").resize((1024, 768)).convert("RGB")
    image = decode_image(encode(stored, "PNG"), gray_spec, max_pixels=MAX_PIXELS)
    assert image.size == (94, 70) and image.mode == "RGB"  # reduced by 11 while RGB: still over 2x the 43x32 resize
    served = image_bytes_to_tensor(encode(stored, "PNG"), gray_spec, limits=LIMITS)
    plain = prepare_image(stored, gray_spec)  # what training's preprocessing makes of the full-size image
    assert (served.int() - plain.int()).abs().max().item() <= 2


def test_draft_size_keeps_what_the_resize_needs(gray_spec: PreprocessingSpec) -> None:
    assert draft_size(2000, 1000, gray_spec) == (64, 32)
    assert draft_size(20, 10, gray_spec) == (20, 10)  # never upscales
    stretch = PreprocessingSpec(input_size=28, channels=1, resize_size=28, resize_mode="stretch")
    assert draft_size(2000, 1000, stretch) == (28, 28)


@pytest.mark.parametrize(
    "data",
    [b"", b"not an image at all", b"\x89PNG\r\n\x1a\n" + b"\x00" * 20, b"GIF89a" + b"\x01" * 8],
    ids=["empty", "garbage", "png-magic-only", "gif-junk"],
)
def test_garbage_is_a_400(data: bytes, gray_spec: PreprocessingSpec) -> None:
    with pytest.raises(InvalidImage):
        image_bytes_to_tensor(data, gray_spec, limits=LIMITS)


def test_truncated_jpeg_is_a_400(gray_spec: PreprocessingSpec) -> None:
    rng = np.random.default_rng(0)
    data = encode(Image.fromarray(rng.integers(0, 255, (256, 256, 3), dtype=np.uint8)), "JPEG", quality=95)
    with pytest.raises(InvalidImage, match="truncated"):
        image_bytes_to_tensor(data[: len(data) // 2], gray_spec, limits=LIMITS)


def test_truncated_png_is_a_400(gray_spec: PreprocessingSpec) -> None:
    rng = np.random.default_rng(0)
    data = encode(Image.fromarray(rng.integers(0, 255, (128, 128), dtype=np.uint8)), "PNG")
    with pytest.raises(InvalidImage):
        image_bytes_to_tensor(data[: len(data) // 2], gray_spec, limits=LIMITS)


@pytest.mark.parametrize("size", [(20_000, 20_000), (100_000, 100_000), (MAX_SIDE + 1, 10)])
def test_bomb_dimensions_are_rejected_before_decoding(size: tuple[int, int], gray_spec: PreprocessingSpec) -> None:
    data = png_header_only(*size)
    assert len(data) < 200
    with pytest.raises(InvalidImage):
        decode_image(data, gray_spec, max_pixels=MAX_PIXELS)


def test_max_pixels_setting_is_enforced(gray_spec: PreprocessingSpec) -> None:
    data = encode(Image.new("L", (100, 100)), "PNG")
    with pytest.raises(InvalidImage, match="100x100 pixels; the limits are 9999 pixels"):
        image_bytes_to_tensor(data, gray_spec, limits=DecodeLimits(9_999))
    assert image_bytes_to_tensor(data, gray_spec, limits=DecodeLimits(10_000)).shape == (1, 28, 28)


def test_formats_outside_the_allow_list_are_rejected(gray_spec: PreprocessingSpec) -> None:
    data = encode(Image.new("RGB", (32, 32)), "ICO")
    with pytest.raises(InvalidImage, match="accepted formats"):
        image_bytes_to_tensor(data, gray_spec, limits=LIMITS)


def test_pixels_match_the_shared_preprocessing(gray_spec: PreprocessingSpec) -> None:

    rng = np.random.default_rng(1)
    image = Image.fromarray(rng.integers(0, 255, (40, 50), dtype=np.uint8))
    served = image_bytes_to_tensor(encode(image, "PNG"), gray_spec, limits=LIMITS)
    assert torch.equal(served, prepare_image(image, gray_spec))


def test_open_image_reads_the_header_alone_and_enforces_the_limits() -> None:
    assert open_image(png_header_only(28, 28), max_pixels=4096).size == (28, 28)
    with pytest.raises(InvalidImage, match="decompression bomb"):
        open_image(png_header_only(50_000, 50_000), max_pixels=MAX_PIXELS)  # small file, huge image: no decode
    with pytest.raises(InvalidImage, match="the limits are 4096 pixels"):
        open_image(png_header_only(100, 100), max_pixels=4096)
    with pytest.raises(InvalidImage, match="accepted formats"):
        open_image(b"not an image", max_pixels=4096)
    with pytest.raises(InvalidImage, match="accepted formats: PNG"):
        open_image(encode(Image.new("L", (8, 8)), "JPEG"), max_pixels=4096, formats=("PNG",))


def test_only_a_bomb_declares_more_than_2048_pixels_per_byte() -> None:
    blank_photo = encode(Image.new("L", (4000, 3000), 255), "PNG")  # 8-bit, all white: deflate's best case
    assert open_image(blank_photo, max_pixels=MAX_PIXELS).size == (4000, 3000)
    bilevel = encode(Image.new("1", (4000, 3000)), "PNG")  # 1 bit a pixel: 12 megapixels in a few KB
    with pytest.raises(InvalidImage, match="decompression bomb"):
        open_image(bilevel, max_pixels=MAX_PIXELS)
    assert open_image(bilevel, max_pixels=MAX_PIXELS, max_pixels_per_byte=10**6).size == (4000, 3000)


def test_the_pixel_budget_is_spent_per_decoded_pixel_across_a_request(gray_spec: PreprocessingSpec) -> None:
    photo = encode(Image.new("RGB", (4000, 3000), (10, 200, 10)), "JPEG")  # decodes at 1/8: 500x375
    palette = encode(Image.effect_noise((2000, 1500), 64).convert("P"), "PNG")  # full size: 3 megapixels
    budget = PixelBudget(4_000_000)
    image_bytes_to_tensor(photo, gray_spec, limits=LIMITS, budget=budget)
    assert budget.spent == 500 * 375
    image_bytes_to_tensor(palette, gray_spec, limits=LIMITS, budget=budget)
    with pytest.raises(DecodeBudgetExceeded, match="max-request-pixels"):
        image_bytes_to_tensor(palette, gray_spec, limits=LIMITS, budget=budget)
    assert budget.spent == 500 * 375 + 3_000_000  # the refused image took nothing


def test_png_text_chunks_are_capped_below_pillows_defaults(gray_spec: PreprocessingSpec) -> None:
    info = PngImagePlugin.PngInfo()
    info.add_text("comment", "x" * 1_000_000, zip=True)  # inflates to 1 MB: within Pillow's default 1 MiB cap
    data = encode(Image.new("L", (28, 28)), "PNG", pnginfo=info)
    with pytest.raises(InvalidImage):
        image_bytes_to_tensor(data, gray_spec, limits=LIMITS)


@pytest.mark.parametrize("mode", ["L", "RGB"])
def test_a_png_at_the_input_size_decodes_to_the_same_pixels_as_through_pillow(mode: str) -> None:
    """The libpng fast path (8-bit PNG already at the model's mode and size) must not drift from Pillow's."""

    channels = 1 if mode == "L" else 3
    spec = PreprocessingSpec(
        input_size=28,
        channels=channels,
        resize_size=28,
        resize_mode="stretch",
        mean=[0.5] * channels,
        std=[0.5] * channels,
    )
    rng = np.random.default_rng(7)
    pixels = rng.integers(0, 255, (28, 28) if mode == "L" else (28, 28, 3), dtype=np.uint8)
    image = Image.fromarray(pixels)
    for options in ({}, {"optimize": True}, {"interlace": 1}):
        served = plain_png_to_tensor(encode(image, "PNG", **options), spec, max_pixels=MAX_PIXELS)
        assert served is not None and served.shape == (channels, 28, 28)
        assert torch.equal(served, prepare_image(image, spec))


def rotated_exif() -> bytes:
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90° clockwise to display
    return exif.tobytes()


def text_chunk() -> PngImagePlugin.PngInfo:
    info = PngImagePlugin.PngInfo()
    info.add_text("Comment", "hello")
    return info


def corrupt_last_idat_crc(data: bytes) -> bytes:
    at = data.rindex(b"IDAT")
    (length,) = struct.unpack(">I", data[at - 4 : at])
    crc_at = at + 4 + length
    return data[:crc_at] + bytes([data[crc_at] ^ 0xFF]) + data[crc_at + 1 :]


def with_gamma_chunk(data: bytes, *, crc_ok: bool) -> bytes:
    """``data`` with a gAMA chunk after IHDR (8 + 25 bytes in), its CRC right or wrong."""
    body = b"gAMA" + struct.pack(">I", 45455)
    crc = zlib.crc32(body) ^ (0 if crc_ok else 1)
    return data[:33] + struct.pack(">I", 4) + body + struct.pack(">I", crc) + data[33:]


def test_a_png_at_the_input_size_with_an_exif_orientation_is_turned_upright() -> None:

    gray = PreprocessingSpec(input_size=28, channels=1, resize_size=28, resize_mode="stretch")
    image = Image.fromarray(np.random.default_rng(11).integers(0, 255, (28, 28), dtype=np.uint8))
    served = image_bytes_to_tensor(encode(image, "PNG", exif=rotated_exif()), gray, limits=LIMITS)
    assert torch.equal(served, prepare_image(image.transpose(Image.Transpose.ROTATE_270), gray))


def test_only_plain_pngs_at_the_input_size_take_the_libpng_path() -> None:
    gray = PreprocessingSpec(input_size=28, channels=1, resize_size=28, resize_mode="stretch")
    at_size = Image.new("L", (28, 28), 7)
    assert plain_png_to_tensor(encode(at_size, "PNG"), gray, max_pixels=MAX_PIXELS) is not None
    others = {
        "RGB for a grey model": encode(Image.new("RGB", (28, 28)), "PNG"),
        "another size": encode(Image.new("L", (29, 28)), "PNG"),
        "palette": encode(at_size.convert("P"), "PNG"),
        "grey with alpha": encode(at_size.convert("LA"), "PNG"),
        "16-bit": encode(Image.fromarray(np.zeros((28, 28), dtype=np.uint16)), "PNG"),
        "JPEG": encode(at_size, "JPEG"),
        "too short": b"\x89PNG\r\n\x1a\n",
        "an EXIF orientation": encode(at_size, "PNG", exif=rotated_exif()),
        "a text chunk": encode(at_size, "PNG", pnginfo=text_chunk()),
        "a gAMA chunk with a bad CRC": with_gamma_chunk(encode(at_size, "PNG"), crc_ok=False),
        "no IEND": encode(at_size, "PNG")[:-12],
    }
    for what, data in others.items():
        assert plain_png_to_tensor(data, gray, max_pixels=MAX_PIXELS) is None, what
    assert plain_png_to_tensor(encode(at_size, "PNG"), gray, max_pixels=28 * 28 - 1) is None  # the pixel limit
    assert (
        plain_png_to_tensor(with_gamma_chunk(encode(at_size, "PNG"), crc_ok=True), gray, max_pixels=MAX_PIXELS)
        is not None
    )
    with pytest.raises(InvalidImage, match="corrupt PNG"):  # libpng checks the critical chunks' CRCs itself
        plain_png_to_tensor(corrupt_last_idat_crc(encode(at_size, "PNG")), gray, max_pixels=MAX_PIXELS)
    cropping = PreprocessingSpec(input_size=28, channels=1, resize_size=32)  # resize 32, crop 28: not as stored
    assert plain_png_to_tensor(encode(at_size, "PNG"), cropping, max_pixels=MAX_PIXELS) is None


def test_a_png_at_the_input_size_still_gets_the_checkpoints_resize_and_crop(gray_spec: PreprocessingSpec) -> None:

    image = Image.fromarray(np.random.default_rng(5).integers(0, 255, (28, 28), dtype=np.uint8))
    served = image_bytes_to_tensor(encode(image, "PNG"), gray_spec, limits=LIMITS)  # resize 32, crop 28
    assert torch.equal(served, prepare_image(image, gray_spec))


def test_a_truncated_png_at_the_input_size_is_a_400() -> None:
    spec = PreprocessingSpec(input_size=28, channels=1, resize_size=28, resize_mode="stretch")
    data = encode(Image.fromarray(np.random.default_rng(3).integers(0, 255, (28, 28), dtype=np.uint8)), "PNG")
    with pytest.raises(InvalidImage):
        image_bytes_to_tensor(data[: len(data) - 30], spec, limits=LIMITS)
