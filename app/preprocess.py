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
import zlib

import torch
from PIL import Image, ImageOps, UnidentifiedImageError
from torch import Tensor
from torchvision.io import decode_png

from app.errors import InvalidImage
from models import PreprocessingSpec
from models.preprocessing import prepare_image

__all__ = [
    "ALLOWED_FORMATS",
    "DEFAULT_MAX_PIXELS",
    "MAX_SIDE",
    "TINY_IMAGE_MAX_BYTES",
    "decode_image",
    "draft_size",
    "image_bytes_to_tensor",
    "image_to_tensor",
    "open_image",
    "plain_png_to_tensor",
]

log = logging.getLogger("app.preprocess")

#: Formats the service decodes; anything else is rejected before any pixel is decoded.
ALLOWED_FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF", "PPM")
#: Longest accepted side, whatever the pixel budget (rejects 1 x 10^7 strips).
MAX_SIDE = 30_000
#: Largest decoded image by default, width x height (``--max-image-pixels``).
DEFAULT_MAX_PIXELS = 40_000_000
#: What Pillow raises on bad bytes: its parsers signal corrupt data with these (``UnidentifiedImageError``
#: and truncation are ``OSError``s; several plugins raise ``SyntaxError`` or ``struct.error``). Anything
#: else escaping a decode is a bug, and becomes a logged 500.
PIL_DATA_ERRORS: tuple[type[Exception], ...] = (OSError, ValueError, SyntaxError, EOFError, struct.error)


def draft_size(width: int, height: int, spec: PreprocessingSpec) -> tuple[int, int]:
    """The smallest size a JPEG may be decoded at without losing what ``spec``'s resize keeps."""
    if spec.resize_mode == "stretch":
        return (min(width, spec.input_size), min(height, spec.input_size))
    scale = min(1.0, spec.resize_size / min(width, height))
    return (math.ceil(width * scale), math.ceil(height * scale))


def _open(data: bytes) -> Image.Image:
    try:
        # Pillow warns above MAX_IMAGE_PIXELS (an exception where warnings are errors) and raises above
        # twice that; below, our own max_pixels check rejects the image before any pixel is decoded.
        return Image.open(io.BytesIO(data), formats=ALLOWED_FORMATS)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise InvalidImage(f"image rejected as a decompression bomb: {exc}") from None
    except UnidentifiedImageError:
        raise InvalidImage(f"not a decodable image; accepted formats: {', '.join(ALLOWED_FORMATS)}") from None
    except PIL_DATA_ERRORS as exc:
        raise InvalidImage(f"unreadable image header: {exc}") from None


#: Bodies up to this size may have their header parsed on the event loop (``ModelService.classify``).
TINY_IMAGE_MAX_BYTES = 64 * 1024


def open_image(data: bytes, *, max_pixels: int) -> Image.Image:
    """Parse the header of untrusted bytes (no pixel decoded): format allow-list, dimension and pixel limits.

    Raises ``InvalidImage`` for bad input.
    """
    if not data:
        raise InvalidImage("empty image")
    image = _open(data)
    width, height = image.size
    if width < 1 or height < 1 or width > MAX_SIDE or height > MAX_SIDE or width * height > max_pixels:
        raise InvalidImage(
            f"image is {width}x{height} pixels; the limits are {max_pixels} pixels and {MAX_SIDE} per side"
        )
    return image


def decode_image(data: bytes, spec: PreprocessingSpec, *, max_pixels: int) -> Image.Image:
    """Decode untrusted bytes into an upright Pillow image; raises ``InvalidImage`` for bad input."""
    return _load(open_image(data, max_pixels=max_pixels), spec)


def _load(image: Image.Image, spec: PreprocessingSpec) -> Image.Image:
    """Decode the pixels of an opened image (JPEGs at reduced scale where the resize allows), upright."""
    width, height = image.size
    if image.format == "JPEG":
        # Decode at 1/2, 1/4 or 1/8 scale when the resize would throw those pixels away anyway.
        image.draft("L" if spec.channels == 1 and image.mode == "RGB" else None, draft_size(width, height, spec))
    try:
        image.load()
        return ImageOps.exif_transpose(image) or image
    except PIL_DATA_ERRORS as exc:
        raise InvalidImage(f"corrupt or truncated {image.format} image: {exc}") from None


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


def image_bytes_to_tensor(data: bytes, spec: PreprocessingSpec, *, max_pixels: int) -> Tensor:
    """Bytes -> uint8 (C, H, W) tensor as the model's checkpoint prescribes."""
    tensor = plain_png_to_tensor(data, spec, max_pixels=max_pixels)
    return tensor if tensor is not None else image_to_tensor(open_image(data, max_pixels=max_pixels), spec)


def image_to_tensor(image: Image.Image, spec: PreprocessingSpec) -> Tensor:
    """An image opened by ``open_image`` -> uint8 (C, H, W) tensor as the checkpoint prescribes."""
    image = _load(image, spec)
    try:
        return prepare_image(image, spec)
    except PIL_DATA_ERRORS as exc:  # a mode Pillow cannot convert, or pixel data that fails late
        log.debug("prepare_image failed", exc_info=True)
        raise InvalidImage(f"cannot convert the {image.mode} image to the model's input: {exc}") from None
