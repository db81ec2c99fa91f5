"""Image bytes -> uint8 CHW tensor, with the checks a public endpoint needs.

Runs in the preprocessing thread pool (Pillow releases the GIL while decoding). The model-specific
part (mode conversion, resize, crop) is ``models.preprocessing.prepare_image``, shared with training
and evaluation; this module adds what only a server needs: format allow-list, decompression-bomb and
dimension guards, JPEG draft decoding at reduced scale, EXIF orientation, and clean 400s for bad data.
"""

from __future__ import annotations

import io
import logging
import math
import struct
import threading
import zlib
from dataclasses import dataclass

import torch
from PIL import ExifTags, Image, PngImagePlugin, UnidentifiedImageError
from torch import Tensor
from torchvision.io import decode_png

from app.errors import DecodeBudgetExceeded, InvalidImage
from models import PreprocessingSpec
from models.preprocessing import prepare_image

__all__ = [
    "ALLOWED_FORMATS",
    "DEFAULT_MAX_PIXELS",
    "DEFAULT_MAX_PIXELS_PER_BYTE",
    "DecodeLimits",
    "MAX_SIDE",
    "PixelBudget",
    "decode_image",
    "draft_size",
    "plan_decode",
    "image_bytes_to_tensor",
    "image_to_tensor",
    "open_image",
    "plain_png_to_tensor",
]

log = logging.getLogger("app.preprocess")

#: Formats the service decodes by default (``--image-formats``); anything else is rejected before any pixel
#: is decoded.
ALLOWED_FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF", "PPM")
#: Longest accepted side, whatever the pixel budget (rejects 1 x 10^7 strips).
MAX_SIDE = 30_000
#: Largest decoded image by default, width x height (``--max-image-pixels``).
DEFAULT_MAX_PIXELS = 40_000_000
#: Declared pixels per byte of file above which an image counts as a decompression bomb (``--max-pixels-per-byte``).
#: Deflate stops at about 1032:1, so only images of 1, 2 or 4 bits per pixel (palettes, bilevel) go beyond
#: 1032 pixels per byte: 6400x6250 pixels of a 2-colour palette fit in 5 KB. Photos and screenshots stay far
#: below (a flat-colour 24-megapixel JPEG: about 170; an all-white 8-bit greyscale PNG: about 1030).
DEFAULT_MAX_PIXELS_PER_BYTE = 2048
#: Images up to this many pixels are never refused for their ratio (icons, tiny sprites).
BOMB_RATIO_MIN_PIXELS = 1_000_000
#: Pillow's limits on PNG text chunks (its defaults: 1 MiB inflated per chunk, 64 MiB in all). Text is never
#: used here; these bound what a crafted file can make the decoder inflate before its first pixel.
PngImagePlugin.MAX_TEXT_CHUNK = 256 * 1024
PngImagePlugin.MAX_TEXT_MEMORY = 1024 * 1024
#: EXIF orientation -> the transposition that makes the image upright (``ImageOps.exif_transpose``'s table).
_ORIENTATION_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
#: Modes ``Image.reduce`` handles; others (palette, bilevel, 16-bit) are resized after mode conversion only.
_REDUCIBLE_MODES = frozenset({"L", "LA", "RGB", "RGBA"})
#: What Pillow raises on bad bytes: its parsers signal corrupt data with these (``UnidentifiedImageError``
#: and truncation are ``OSError``s; several plugins raise ``SyntaxError`` or ``struct.error``; the PNG
#: plugin indexes past short chunk payloads, an ``IndexError``: docs/fuzzing.md). Anything else escaping a
#: decode is a bug, and becomes a logged 500.
PIL_DATA_ERRORS: tuple[type[Exception], ...] = (OSError, ValueError, SyntaxError, EOFError, struct.error, IndexError)


def draft_size(width: int, height: int, spec: PreprocessingSpec) -> tuple[int, int]:
    """The smallest size a JPEG may be decoded at without losing what ``spec``'s resize keeps."""
    if spec.resize_mode == "stretch":
        return (min(width, spec.input_size), min(height, spec.input_size))
    scale = min(1.0, spec.resize_size / min(width, height))
    return (math.ceil(width * scale), math.ceil(height * scale))


class PixelBudget:
    """The pixels one request may decode, summed over its images (``--max-request-pixels``); thread-safe.

    Each image's decoded size (after JPEG draft scaling) is spent before its pixels are decoded; past
    the budget the image is refused with 413, so a ``/predict/batch`` of sixteen 40-megapixel images is
    refused after the first few headers instead of decoding 640 megapixels.
    """

    def __init__(self, pixels: int) -> None:
        self.limit = pixels
        self.spent = 0
        self._lock = threading.Lock()

    def spend(self, pixels: int) -> None:
        """Take ``pixels`` from the budget, or raise ``DecodeBudgetExceeded`` (taking nothing)."""
        with self._lock:
            if self.spent + pixels > self.limit:
                raise DecodeBudgetExceeded(
                    f"the images of this request decode to more than {self.limit} pixels (--max-request-pixels)"
                )
            self.spent += pixels


def _open(data: bytes, formats: tuple[str, ...]) -> Image.Image:
    try:
        # Pillow warns above MAX_IMAGE_PIXELS (an exception where warnings are errors) and raises above
        # twice that; below, our own max_pixels check rejects the image before any pixel is decoded.
        return Image.open(io.BytesIO(data), formats=formats)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise InvalidImage("image rejected as a decompression bomb") from None
    except UnidentifiedImageError:
        raise InvalidImage(f"not a decodable image; accepted formats: {', '.join(formats)}") from None
    except PIL_DATA_ERRORS:
        log.debug("header parse failed", exc_info=True)
        raise InvalidImage("unreadable or oversized image header") from None


def open_image(
    data: bytes,
    *,
    max_pixels: int,
    formats: tuple[str, ...] = ALLOWED_FORMATS,
    max_pixels_per_byte: int = DEFAULT_MAX_PIXELS_PER_BYTE,
) -> Image.Image:
    """Parse the header of untrusted bytes (no pixel decoded): format allow-list, dimension and pixel limits.

    Raises ``InvalidImage`` for bad input, including images whose declared pixels per byte of file only a
    decompression bomb reaches (``DEFAULT_MAX_PIXELS_PER_BYTE``).
    """
    if not data:
        raise InvalidImage("empty image")
    image = _open(data, formats)
    width, height = image.size
    if width < 1 or height < 1 or width > MAX_SIDE or height > MAX_SIDE or width * height > max_pixels:
        raise InvalidImage(
            f"image is {width}x{height} pixels; the limits are {max_pixels} pixels and {MAX_SIDE} per side"
        )
    if width * height > BOMB_RATIO_MIN_PIXELS and width * height > max_pixels_per_byte * len(data):
        raise InvalidImage(
            f"image declares {width}x{height} pixels in {len(data)} bytes: refused as a decompression bomb"
        )
    return image


def decode_image(data: bytes, spec: PreprocessingSpec, *, max_pixels: int) -> Image.Image:
    """Decode untrusted bytes into an upright Pillow image; raises ``InvalidImage`` for bad input."""
    image = open_image(data, max_pixels=max_pixels)
    plan_decode(image, spec)
    return _load(image, spec)


def plan_decode(image: Image.Image, spec: PreprocessingSpec) -> int:
    """Set an opened image up to decode no more pixels than ``spec``'s resize keeps; the pixels it will decode.

    JPEGs are decoded at 1/2, 1/4 or 1/8 scale (libjpeg's DCT scaling, ``Image.draft``) when the resize
    would throw those pixels away anyway; other formats decode at full size.
    """
    if image.format == "JPEG":
        mode = "L" if spec.channels == 1 and image.mode == "RGB" else None
        image.draft(mode, draft_size(*image.size, spec))
    width, height = image.size
    return width * height


def _reduce_early(image: Image.Image, spec: PreprocessingSpec) -> Image.Image:
    """Shrink a large image by an integer factor (box filter) before mode conversion, EXIF transpose and resize.

    Keeps at least twice the resize target on each side, as Pillow's own ``reducing_gap=2`` does, so the
    final antialiased resize sees enough pixels; it saves converting and transposing every pixel of, say, a
    24-megapixel PNG at full size.
    """
    width, height = image.size
    if spec.resize_mode == "stretch":
        target_w = target_h = spec.input_size
    else:
        target_w = target_h = spec.resize_size
        if width < height:
            target_h = math.ceil(height * spec.resize_size / width)
        else:
            target_w = math.ceil(width * spec.resize_size / height)
    factor = min(width // (2 * target_w), height // (2 * target_h))
    if factor < 2 or image.mode not in _REDUCIBLE_MODES:
        return image
    return image.reduce(factor)


def _load(image: Image.Image, spec: PreprocessingSpec) -> Image.Image:
    """Decode the pixels of an image set up by ``plan_decode`` (at reduced scale where it allows), upright."""
    try:
        image.load()
        transpose = _ORIENTATION_TRANSPOSE.get(image.getexif().get(ExifTags.Base.Orientation, 1))
        image = _reduce_early(image, spec)
        return image.transpose(transpose) if transpose is not None else image
    except PIL_DATA_ERRORS:
        log.debug("decode failed", exc_info=True)
        raise InvalidImage(f"corrupt or truncated {image.format} image") from None


_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
#: PNG colour types without palette or alpha: 0 grey, 2 RGB; by the model's channels.
_PNG_COLOUR_TYPE = {1: 0, 3: 2}
#: Chunks that change nothing Pillow's path would make of the pixels. Anything else (eXIf or text chunks
#: that may carry an orientation, transparency, palettes, animation) sends the image down Pillow's path.
_PLAIN_PNG_CHUNKS = frozenset({b"IHDR", b"IDAT", b"IEND", b"sRGB", b"gAMA", b"cHRM", b"pHYs", b"tIME"})


#: libpng fails on a bad CRC in these (a 400); in any other chunk it only warns, where Pillow fails.
_CRITICAL_PNG_CHUNKS = frozenset({b"IHDR", b"IDAT", b"IEND"})


def _only_plain_chunks(data: bytes) -> bool:
    """Every chunk of a kind in ``_PLAIN_PNG_CHUNKS``, the ancillary ones intact, and the file ends with IEND."""
    offset = len(_PNG_SIGNATURE)
    while offset + 12 <= len(data):
        (length,) = struct.unpack_from(">I", data, offset)
        kind = data[offset + 4 : offset + 8]
        end = offset + 12 + length
        if kind not in _PLAIN_PNG_CHUNKS or end > len(data):
            return False
        if kind not in _CRITICAL_PNG_CHUNKS and zlib.crc32(data[offset + 4 : end - 4]) != int.from_bytes(
            data[end - 4 : end]
        ):
            return False
        if kind == b"IEND":
            return end == len(data)
        offset = end
    return False


def plain_png_to_tensor(data: bytes, spec: PreprocessingSpec, *, max_pixels: int) -> Tensor | None:
    """An 8-bit grey (or RGB) PNG already at the model's channels and input size -> its pixels, by libpng.

    ``None`` for anything else (take ``image_bytes_to_tensor``). Judged from the fixed-layout IHDR
    chunk and the list of chunks (each CRC checked; only chunks that cannot change the pixels Pillow's
    path makes, so no EXIF orientation, transparency or palette), so Pillow is not involved: for a
    28x28 PNG, Pillow's header parse and decode cost three times libpng's decode through torchvision.
    Same pixels as the Pillow path (tests/app/test_preprocess.py holds them equal).
    """
    size = spec.input_size
    if len(data) < 33 or data[:8] != _PNG_SIGNATURE or data[12:16] != b"IHDR" or size * size > max_pixels:
        return None
    width, height, depth, colour = struct.unpack(">IIBB", data[16:26])
    if (width, height, depth, colour) != (size, size, 8, _PNG_COLOUR_TYPE.get(spec.channels)):
        return None
    if spec.resize_mode != "stretch" and spec.resize_size != size:  # resize_and_crop would change the pixels
        return None
    if not _only_plain_chunks(data):
        return None
    try:
        tensor = decode_png(torch.frombuffer(bytearray(data), dtype=torch.uint8))
    except RuntimeError:  # its message is libpng's and torchvision's source location: not for clients
        log.debug("decode_png failed", exc_info=True)
        raise InvalidImage("corrupt PNG image data") from None
    return tensor if tensor.shape == (spec.channels, size, size) else None


@dataclass(frozen=True)
class DecodeLimits:
    """What one image may be: its formats, its declared pixels, its pixels per byte of file."""

    max_pixels: int = DEFAULT_MAX_PIXELS
    formats: tuple[str, ...] = ALLOWED_FORMATS
    max_pixels_per_byte: int = DEFAULT_MAX_PIXELS_PER_BYTE

    def open(self, data: bytes) -> Image.Image:
        """``open_image`` under these limits."""
        return open_image(
            data, max_pixels=self.max_pixels, formats=self.formats, max_pixels_per_byte=self.max_pixels_per_byte
        )


def image_bytes_to_tensor(
    data: bytes, spec: PreprocessingSpec, *, limits: DecodeLimits, budget: PixelBudget | None = None
) -> Tensor:
    """Bytes -> uint8 (C, H, W) tensor as the model's checkpoint prescribes.

    The pixels it decodes are spent from ``budget`` (the request's) before they are decoded.
    """
    if "PNG" in limits.formats:
        tensor = plain_png_to_tensor(data, spec, max_pixels=limits.max_pixels)
        if tensor is not None:
            if budget is not None:
                budget.spend(spec.input_size * spec.input_size)
            return tensor
    return image_to_tensor(limits.open(data), spec, budget=budget)


def image_to_tensor(image: Image.Image, spec: PreprocessingSpec, *, budget: PixelBudget | None = None) -> Tensor:
    """An image opened by ``open_image`` -> uint8 (C, H, W) tensor as the checkpoint prescribes."""
    pixels = plan_decode(image, spec)
    if budget is not None:
        budget.spend(pixels)
    image = _load(image, spec)
    try:
        return prepare_image(image, spec)
    except PIL_DATA_ERRORS:  # a mode Pillow cannot convert, or pixel data that fails late
        log.debug("prepare_image failed", exc_info=True)
        raise InvalidImage(f"cannot convert the {image.mode} image to the model's input") from None
