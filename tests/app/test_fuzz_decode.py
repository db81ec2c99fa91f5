"""Fuzzing the decode path: valid images of every accepted format, mutated by structure (tests/fuzz_images.py).

The property: ``image_bytes_to_tensor`` returns a uint8 tensor of the model's shape or raises ``InvalidImage``,
whatever the bytes; ``plain_png_to_tensor`` the same or ``None``. Any other exception is a bug (a 500 in the
service). The number of examples is the hypothesis profile's (tests/conftest.py, docs/fuzzing.md).
"""

from __future__ import annotations

import struct
import warnings
import zlib

import pytest
import torch
from fuzz_images import (
    PNG_SIGNATURE,
    EncodedImage,
    byte_mutations,
    images,
    mutated_images,
    plain_pngs,
    png_chunk,
    png_mutations,
)
from hypothesis import event, given
from hypothesis import strategies as st
from torch import Tensor

from app.errors import InvalidImage
from app.image_header import peek_header
from app.preprocess import DEFAULT_MAX_PIXELS, DecodeLimits, PixelBudget, image_bytes_to_tensor, plain_png_to_tensor
from models import PreprocessingSpec


@st.composite
def specs(draw: st.DrawFn) -> PreprocessingSpec:
    """Any valid preprocessing: 1 or 3 channels, input 1..64, either resize mode, any interpolation."""
    channels = draw(st.sampled_from([1, 3]))
    input_size = draw(st.integers(1, 64))
    return PreprocessingSpec(
        input_size=input_size,
        channels=channels,
        resize_size=draw(st.integers(input_size, input_size + 32)),
        resize_mode=draw(st.sampled_from(["shorter_side_center_crop", "stretch"])),
        interpolation=draw(st.sampled_from(["bilinear", "bicubic", "nearest"])),
        mean=[0.5] * channels,
        std=[0.5] * channels,
    )


max_pixels = st.one_of(st.just(DEFAULT_MAX_PIXELS), st.integers(1, 200_000))


def decode(data: bytes, spec: PreprocessingSpec, max_pixels: int) -> Tensor | None:
    """``image_bytes_to_tensor``, or ``None`` for ``InvalidImage``; anything else propagates (the failure).

    Warnings are ignored as the server ignores them: only an exception becomes an error response.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return image_bytes_to_tensor(data, spec, limits=DecodeLimits(max_pixels), budget=PixelBudget(10**9))
        except InvalidImage:
            return None


def assert_model_input(tensor: Tensor, spec: PreprocessingSpec) -> None:
    assert tensor.dtype == torch.uint8
    assert tuple(tensor.shape) == (spec.channels, spec.input_size, spec.input_size)


@given(image=images(), spec=specs())
def test_every_valid_image_decodes(image: EncodedImage, spec: PreprocessingSpec) -> None:
    tensor = decode(image.data, spec, DEFAULT_MAX_PIXELS)
    assert tensor is not None, f"valid {image.format} {image.mode} {image.size} rejected"
    assert_model_input(tensor, spec)


@given(image=mutated_images(), spec=specs(), max_pixels=max_pixels)
def test_mutated_image_decodes_or_is_invalid(image: EncodedImage, spec: PreprocessingSpec, max_pixels: int) -> None:
    tensor = decode(image.data, spec, max_pixels)
    event(f"{image.format}: {'decoded' if tensor is not None else 'InvalidImage'}")
    if tensor is not None:
        assert_model_input(tensor, spec)


@given(data=st.data(), channels=st.sampled_from([1, 3]), size=st.integers(1, 64))
def test_plain_png_fast_path_decodes_declines_or_is_invalid(data: st.DataObject, channels: int, size: int) -> None:
    """PNGs shaped for the libpng fast path (8-bit, the model's channels and size), then mutated."""
    spec = PreprocessingSpec(
        input_size=size, channels=channels, resize_size=size, mean=[0.5] * channels, std=[0.5] * channels
    )
    png = data.draw(plain_pngs(size, channels))
    mutated = data.draw(png_mutations(png).flatmap(byte_mutations))
    try:
        tensor = plain_png_to_tensor(mutated, spec, max_pixels=DEFAULT_MAX_PIXELS)
    except InvalidImage:
        tensor = None
    if tensor is not None:
        assert_model_input(tensor, spec)
    slow = decode(mutated, spec, DEFAULT_MAX_PIXELS)
    if slow is not None:
        assert_model_input(slow, spec)


@given(
    data=st.binary(max_size=512),
    prefix=st.sampled_from(
        [b"", b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"GIF89a", b"BM", b"II*\x00", b"MM\x00*", b"P6\n", b"RIFF"]
    ),
    spec=specs(),
)
def test_arbitrary_bytes_decode_or_are_invalid(data: bytes, prefix: bytes, spec: PreprocessingSpec) -> None:
    tensor = decode(prefix + data, spec, DEFAULT_MAX_PIXELS)
    if tensor is not None:
        assert_model_input(tensor, spec)


# ---- defects the fuzzing found, pinned until fixed (docs/fuzzing.md) ---------------------------------------

#: A 1x1 grey PNG with an empty iCCP chunk after its IDAT (found by the plain PNG test's long run).
EMPTY_ICCP_AFTER_IDAT = PNG_SIGNATURE + b"".join(
    [
        png_chunk(b"IHDR", struct.pack(">IIBBBBB", 1, 1, 8, 0, 0, 0, 0)),
        png_chunk(b"IDAT", zlib.compress(b"\x00\x00")),  # filter byte, one black pixel
        png_chunk(b"iCCP", b""),
        png_chunk(b"IEND", b""),
    ]
)


def test_an_empty_iccp_chunk_after_idat_is_an_invalid_image(gray_spec: PreprocessingSpec) -> None:
    """Pillow's PngStream.chunk_iCCP indexes past an empty payload while ``image.load()`` reads the chunks after
    IDAT: an ``IndexError``, which the service answered with a 500 until it joined ``PIL_DATA_ERRORS``."""
    with pytest.raises(InvalidImage):
        image_bytes_to_tensor(EMPTY_ICCP_AFTER_IDAT, gray_spec, limits=DecodeLimits())


@given(image=mutated_images())
def test_the_header_peek_never_raises(image: EncodedImage) -> None:
    """What the event loop reads of an upload (``peek_header``): a size or ``None``, never an exception."""
    header = peek_header(image.data)
    event(f"{image.format}: {'peeked' if header is not None else 'not recognised'}")
    assert header is None or (header.width >= 0 and header.height >= 0)


@given(image=images())
def test_the_header_peek_agrees_with_pillow_on_valid_images(image: EncodedImage) -> None:
    header = peek_header(image.data)
    if image.format in ("TIFF", "PPM"):  # not peeked: always decoded in the worker pool
        assert header is None
        return
    assert header is not None and (header.format, header.width, header.height) == (image.format, *image.size)
