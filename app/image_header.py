"""An image's format and dimensions from its fixed-layout header bytes: no decoder, no decompression.

What the event loop may read of an untrusted upload before deciding where to decode it
(``ModelService``). Pillow's ``Image.open`` would do the same job but, for a PNG, also reads and
inflates every text chunk before the first IDAT: a 59 KB file of zTXt chunks made the event loop
inflate 60 MB. Here a PNG is its IHDR, a GIF its logical screen, a JPEG its first SOF (found by
skipping segment lengths, never reading their contents), a WebP its VP8/VP8L/VP8X header and a BMP its
info header. Other formats (TIFF, PPM) and anything malformed give ``None``: the caller then treats the
image as large, i.e. decodes it in the worker pool under the full checks of ``app.preprocess``.
"""

from __future__ import annotations

import struct
from typing import NamedTuple

__all__ = ["ImageHeader", "peek_header"]

#: JPEG start-of-frame markers (SOF0-SOF15 but DHT C4, JPG C8 and DAC CC), which carry the dimensions.
_JPEG_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
#: JPEG markers without a length field: TEM, RST0-7 (SOI and EOI are handled by the walk).
_JPEG_STANDALONE = frozenset({0x01, *range(0xD0, 0xD8)})
#: Segments a JPEG header walk skips before giving up (real files have a dozen or so).
_JPEG_MAX_SEGMENTS = 256


class ImageHeader(NamedTuple):
    """What the header says: Pillow's format name and the image's width and height in pixels."""

    format: str
    width: int
    height: int

    @property
    def pixels(self) -> int:
        return self.width * self.height


def peek_header(data: bytes) -> ImageHeader | None:
    """The format and size of ``data`` from its header; ``None`` when not recognised or malformed."""
    try:
        if data.startswith(b"\x89PNG\r\n\x1a\n"):
            return _png(data)
        if data.startswith(b"\xff\xd8"):
            return _jpeg(data)
        if data[:6] in (b"GIF87a", b"GIF89a"):
            width, height = struct.unpack_from("<HH", data, 6)
            return ImageHeader("GIF", width, height)
        if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
            return _webp(data)
        if data[:2] == b"BM":
            width, height = struct.unpack_from("<ii", data, 18)
            return ImageHeader("BMP", abs(width), abs(height))
    except struct.error:  # shorter than its header
        return None
    return None


def _png(data: bytes) -> ImageHeader | None:
    if data[12:16] != b"IHDR":
        return None
    width, height = struct.unpack_from(">II", data, 16)
    return ImageHeader("PNG", width, height)


def _jpeg(data: bytes) -> ImageHeader | None:
    offset = 2
    for _ in range(_JPEG_MAX_SEGMENTS):
        while offset < len(data) and data[offset] == 0xFF and offset + 1 < len(data) and data[offset + 1] == 0xFF:
            offset += 1  # fill bytes before a marker
        if offset + 4 > len(data) or data[offset] != 0xFF:
            return None
        marker = data[offset + 1]
        if marker in _JPEG_STANDALONE:
            offset += 2
            continue
        if marker in (0xD9, 0xDA):  # EOI or start of scan before any frame header
            return None
        (length,) = struct.unpack_from(">H", data, offset + 2)
        if marker in _JPEG_SOF:
            height, width = struct.unpack_from(">HH", data, offset + 5)
            return ImageHeader("JPEG", width, height)
        if length < 2:
            return None
        offset += 2 + length
    return None


def _webp(data: bytes) -> ImageHeader | None:
    chunk = data[12:16]
    if chunk == b"VP8X":
        width = int.from_bytes(data[24:27], "little") + 1
        height = int.from_bytes(data[27:30], "little") + 1
        return ImageHeader("WEBP", width, height) if len(data) >= 30 else None
    if chunk == b"VP8L" and data[20:21] == b"\x2f":
        (bits,) = struct.unpack_from("<I", data, 21)
        return ImageHeader("WEBP", (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1)
    if chunk == b"VP8 " and data[23:26] == b"\x9d\x01\x2a":
        width, height = struct.unpack_from("<HH", data, 26)
        return ImageHeader("WEBP", width & 0x3FFF, height & 0x3FFF)
    return None
