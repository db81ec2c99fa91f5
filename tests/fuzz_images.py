"""Hypothesis strategies for fuzzing image decoding: valid images of every accepted format, mutated by structure.

``images()`` draws a valid file (format, mode, size, pixels, save options, EXIF) encoded by Pillow;
``mutated_images()`` takes one through format-aware mutations (PNG chunks, JPEG markers, TIFF tags, EXIF)
and then generic byte mutations (flips, truncation, deletions, repeats, splices). Any test imports them
as ``from fuzz_images import ...`` (see tests/conftest.py).
"""

from __future__ import annotations

import io
import struct
import zlib
from dataclasses import dataclass, replace
from typing import TypeVar

import numpy as np
from hypothesis import reject
from hypothesis import strategies as st
from PIL import Image

__all__ = [
    "EncodedImage",
    "byte_mutations",
    "exif_blobs",
    "images",
    "jpeg_mutations",
    "mutated_images",
    "plain_pngs",
    "png_mutations",
    "tiff_mutations",
]

#: The modes each format is written in (all of them Pillow can save in that format).
MODES = {
    "JPEG": ("L", "RGB", "CMYK"),
    "PNG": ("1", "L", "LA", "P", "RGB", "RGBA", "I;16"),
    "WEBP": ("RGB", "RGBA"),
    "GIF": ("L", "P"),
    "BMP": ("1", "L", "P", "RGB", "RGBA"),
    "TIFF": ("1", "L", "LA", "P", "RGB", "RGBA", "CMYK", "I;16", "I", "F"),
    "PPM": ("1", "L", "RGB", "I;16"),
}
TIFF_COMPRESSIONS = (None, "tiff_lzw", "tiff_deflate", "tiff_adobe_deflate", "packbits")
ORIENTATION = 0x0112

T = TypeVar("T")


@dataclass(frozen=True)
class EncodedImage:
    """A valid image file as Pillow wrote it, and what it is."""

    data: bytes
    format: str
    mode: str
    size: tuple[int, int]


# ---- valid images ---------------------------------------------------------------------------------------


@st.composite
def pixels(draw: st.DrawFn, mode: str, size: tuple[int, int]) -> Image.Image:
    """An image of ``mode`` and ``size``: solid, a gradient or noise (from a drawn seed)."""
    width, height = size
    kind = draw(st.sampled_from(["solid", "gradient", "noise"]))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    if kind == "solid":
        array = np.broadcast_to(rng.integers(0, 256, 4, dtype=np.uint8), (height, width, 4))
    elif kind == "gradient":
        ramp = np.linspace(0, 255, width * height).reshape(height, width, 1)
        array = (ramp * rng.random(4)).astype(np.uint8)
    else:
        array = rng.integers(0, 256, (height, width, 4), dtype=np.uint8)
    if mode in ("I;16", "I", "F"):
        dtype = {"I;16": np.uint16, "I": np.int32, "F": np.float32}[mode]
        scale = draw(st.sampled_from([1, 257, 65535]))
        return Image.fromarray((array[..., 0].astype(np.int64) * scale).astype(dtype))
    return Image.fromarray(np.ascontiguousarray(array)).convert(mode)  # RGBA


@st.composite
def exif_blobs(draw: st.DrawFn, malformed: bool = True) -> bytes:
    """An EXIF block (TIFF structure, no ``Exif\\0\\0`` prefix) whose Orientation entry may be bogus.

    Orientations 1..8; ``malformed``: also out-of-range values, wrong field types and counts, offsets past
    the end.
    """
    if not malformed or draw(st.booleans()):
        exif = Image.Exif()
        exif[ORIENTATION] = draw(st.integers(1, 8) if not malformed else st.integers(0, 65535))
        return exif.tobytes()
    order = draw(st.sampled_from([b"MM", b"II"]))
    fmt = ">" if order == b"MM" else "<"
    field_type = draw(st.integers(0, 13))
    count = draw(st.sampled_from([0, 1, 2, 4, 0xFFFF, 0xFFFFFFFF]))
    value = draw(st.binary(min_size=4, max_size=4))
    ifd_offset = draw(st.sampled_from([8, 8, 0, 4, 0xFFFFFFFF]))
    entries = draw(st.integers(0, 3))
    header = order + struct.pack(fmt + "HI", 42, ifd_offset)
    entry = struct.pack(fmt + "HHI", ORIENTATION, field_type, count) + value
    return header + struct.pack(fmt + "H", entries) + entry * entries + struct.pack(fmt + "I", 0)


def _save_options(draw: st.DrawFn, fmt: str, mode: str) -> dict:
    """Format-specific ``Image.save`` options worth varying."""
    options: dict = {}
    if fmt in ("JPEG", "PNG", "WEBP", "TIFF") and draw(st.booleans()):
        blob = draw(exif_blobs(malformed=fmt != "TIFF"))  # Pillow's TIFF writer parses the blob
        options["exif"] = blob if fmt != "JPEG" else b"Exif\x00\x00" + blob
    if fmt == "JPEG":
        options |= {"quality": draw(st.integers(1, 100)), "progressive": draw(st.booleans())}
        options["subsampling"] = draw(st.sampled_from([-1, 0, 1, 2]))
    elif fmt == "PNG":
        options["compress_level"] = draw(st.integers(0, 9))
        if mode in ("P", "L", "RGB") and draw(st.booleans()):
            options["transparency"] = draw(st.integers(0, 255)) if mode != "RGB" else (0, 0, 0)
    elif fmt == "WEBP":
        options |= {"lossless": draw(st.booleans()), "quality": draw(st.integers(0, 100))}
    elif fmt == "GIF" and draw(st.booleans()):
        options["transparency"] = draw(st.integers(0, 255))
    elif fmt == "TIFF":
        options["compression"] = draw(st.sampled_from(TIFF_COMPRESSIONS))
    return options


@st.composite
def images(draw: st.DrawFn, formats: tuple[str, ...] = tuple(MODES)) -> EncodedImage:
    """A valid image of one of ``formats``: drawn mode, size (mostly small, some large), pixels and options."""
    fmt = draw(st.sampled_from(formats))
    mode = draw(st.sampled_from(MODES[fmt]))
    side = st.one_of(st.integers(1, 48), st.integers(49, 640))
    size = (draw(side), draw(side))
    image = draw(pixels(mode, size))
    options = _save_options(draw, fmt, mode)
    animated = fmt in ("GIF", "PNG", "WEBP", "TIFF") and "transparency" not in options
    if animated and draw(st.integers(0, 4)) == 0:  # several frames (APNG, ...)
        options |= {
            "save_all": True,
            "append_images": [draw(pixels(mode, size)) for _ in range(draw(st.integers(1, 2)))],
        }
    buffer = io.BytesIO()
    try:
        image.save(buffer, format=fmt, **options)
    except OSError:  # Pillow sizes a progressive JPEG's buffer by a guess that noise at quality 100 exceeds
        if not options.get("progressive"):
            raise
        reject()
    return EncodedImage(buffer.getvalue(), fmt, mode, size)


def rearranged(draw: st.DrawFn, items: list[T], op: str, *, first: int) -> list[T]:
    """``items`` with one item at index ``first`` or later dropped, duplicated or moved (``op``)."""
    if len(items) <= first:
        return items
    items, i = list(items), draw(st.integers(first, len(items) - 1))
    if op == "drop":
        del items[i]
    elif op == "duplicate":
        items.insert(draw(st.integers(first, len(items))), items[i])
    else:
        items.insert(draw(st.integers(first, len(items) - 1)), items.pop(i))
    return items


# ---- PNG chunks ---------------------------------------------------------------------------------------------

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
Chunk = tuple[bytes, bytes]  # (type, payload)


def png_chunks(data: bytes) -> list[Chunk]:
    """The chunks of a well-formed PNG (as Pillow wrote it), in order."""
    chunks, offset = [], len(PNG_SIGNATURE)
    while offset + 12 <= len(data):
        (length,) = struct.unpack_from(">I", data, offset)
        chunks.append((data[offset + 4 : offset + 8], data[offset + 8 : offset + 8 + length]))
        offset += 12 + length
    return chunks


def png_chunk(kind: bytes, payload: bytes, *, length: int | None = None, crc_xor: int = 0) -> bytes:
    """One chunk as bytes; ``length`` and ``crc_xor`` falsify its length field or its CRC."""
    crc = zlib.crc32(kind + payload) ^ crc_xor
    return struct.pack(">I", len(payload) if length is None else length) + kind + payload + struct.pack(">I", crc)


@st.composite
def ihdr_payloads(draw: st.DrawFn) -> bytes:
    """An IHDR payload, its fields anywhere from valid to absurd (dimensions up to 2**32 - 1)."""
    side = st.one_of(st.integers(0, 64), st.sampled_from([30_000, 30_001, 65_535, 2**31 - 1, 2**32 - 1]))
    depth = draw(st.sampled_from([1, 2, 4, 8, 16, 0, 3, 255]))
    colour = draw(st.sampled_from([0, 2, 3, 4, 6, 1, 7]))
    extra = draw(st.lists(st.sampled_from([0, 0, 1, 255]), min_size=3, max_size=3))
    return struct.pack(">IIBBBBB", draw(side), draw(side), depth, colour, *extra)


@st.composite
def ancillary_chunks(draw: st.DrawFn) -> Chunk:
    """A chunk to insert: text (zTXt, iTXt, tEXt) maybe carrying EXIF, eXIf, iCCP, colour and animation chunks."""
    kind = draw(st.sampled_from([b"zTXt", b"iTXt", b"tEXt", b"eXIf", b"iCCP", b"tRNS", b"PLTE", b"acTL", b"fcTL"]))
    junk = st.binary(max_size=64)
    if kind == b"eXIf":
        payload = draw(st.one_of(exif_blobs(), junk))
    elif kind in (b"zTXt", b"iCCP"):
        text = draw(st.one_of(st.just(b"Raw profile type exif\x00"), st.binary(max_size=16).map(lambda b: b + b"\0")))
        payload = text + b"\x00" + draw(st.one_of(exif_blobs().map(zlib.compress), junk))
    elif kind == b"iTXt":
        compressed = draw(st.sampled_from([b"\x00", b"\x01", b"\x02"]))
        payload = b"XML:com.adobe.xmp\x00" + compressed + b"\x00en\x00\x00" + draw(junk.map(zlib.compress) | junk)
    else:
        payload = draw(junk)
    return kind, payload


@st.composite
def png_mutations(draw: st.DrawFn, data: bytes) -> bytes:
    """``data`` (a PNG) with 0-3 chunk-level mutations (drop, duplicate, move, insert, IHDR rewrite, IDAT
    truncation or split), and maybe one chunk's length field or CRC wrong."""
    chunks = png_chunks(data)
    for _ in range(draw(st.integers(0, 3))):
        op = draw(st.sampled_from(["drop", "duplicate", "move", "insert", "ihdr", "truncate_idat", "split_idat"]))
        if op in ("drop", "duplicate", "move"):
            chunks = rearranged(draw, chunks, op, first=0)
        elif op == "insert":
            chunks.insert(draw(st.integers(0, len(chunks))), draw(ancillary_chunks()))
        elif op == "ihdr":
            chunks = [(kind, draw(ihdr_payloads()) if kind == b"IHDR" else payload) for kind, payload in chunks]
        elif op in ("truncate_idat", "split_idat"):
            idats = [j for j, (kind, _) in enumerate(chunks) if kind == b"IDAT"]
            if idats:
                j = draw(st.sampled_from(idats))
                payload = chunks[j][1]
                cut = draw(st.integers(0, len(payload)))
                halves = [(b"IDAT", payload[:cut])] + ([(b"IDAT", payload[cut:])] if op == "split_idat" else [])
                chunks[j : j + 1] = halves
    out = [png_chunk(kind, payload) for kind, payload in chunks]
    fault = draw(st.sampled_from([None, None, "length", "crc"]))
    if fault and chunks:
        i = draw(st.integers(0, len(chunks) - 1))
        kind, payload = chunks[i]
        if fault == "length":
            length = draw(st.sampled_from([0, max(0, len(payload) - 1), len(payload) + 1, 2**31 - 1, 2**32 - 1]))
            out[i] = png_chunk(kind, payload, length=length)
        else:
            out[i] = png_chunk(kind, payload, crc_xor=1)
    return PNG_SIGNATURE + b"".join(out)


# ---- JPEG markers ---------------------------------------------------------------------------------------------


def jpeg_segments(data: bytes) -> tuple[list[bytes], bytes]:
    """The marker segments of a JPEG from SOI up to its first SOS (each with marker and length), and the rest
    (first SOS header, entropy-coded data, later scans, EOI)."""
    segments, offset = [data[:2]], 2
    while offset + 4 <= len(data) and data[offset] == 0xFF and data[offset + 1] != 0xDA:
        (length,) = struct.unpack_from(">H", data, offset + 2)
        segments.append(data[offset : offset + 2 + length])
        offset += 2 + length
    return segments, data[offset:]


def _is_sof(segment: bytes) -> bool:
    return len(segment) >= 10 and segment[1] in (0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB)


@st.composite
def mpf_blobs(draw: st.DrawFn) -> bytes:
    """An MPO index (what makes Pillow open a JPEG as MPO): version, image count and entries, each tag maybe
    missing, values from plausible to absurd."""
    word = st.integers(0, 2**32 - 1)
    entries = b""
    for _ in range(draw(st.integers(0, 3))):
        attribute = draw(st.sampled_from([0x20030000, 0, 0xFFFFFFFF]))
        entries += struct.pack(">IIIHH", attribute, draw(word), draw(word), draw(st.integers(0, 3)), 0)
    count = struct.pack(">I", draw(st.sampled_from([0, 1, 2, 3, 0xFFFFFFFF])))
    tags = draw(st.permutations([(0xB000, 7, 4, b"0100"), (0xB001, 4, 1, count), (0xB002, 7, len(entries), b"")]))
    tags = tags[: draw(st.integers(0, 3))]
    entries_offset = struct.pack(">I", 8 + 2 + 12 * len(tags) + 4)
    ifd = b"".join(struct.pack(">HHI", tag, kind, n) + (value or entries_offset) for tag, kind, n, value in tags)
    return b"MPF\x00MM\x00*\x00\x00\x00\x08" + struct.pack(">H", len(tags)) + ifd + b"\x00" * 4 + entries


@st.composite
def jpeg_app_segments(draw: st.DrawFn) -> bytes:
    """An APP or COM segment to insert: EXIF (APP1), MPO index or ICC profile (APP2), Adobe (APP14), comment."""
    marker, payload = draw(
        st.one_of(
            exif_blobs().map(lambda blob: (0xE1, b"Exif\x00\x00" + blob)),
            mpf_blobs().map(lambda blob: (0xE2, blob)),
            st.binary(max_size=64).map(lambda b: (0xE2, b"ICC_PROFILE\x00" + bytes([1, 1]) + b)),
            st.binary(min_size=7, max_size=7).map(lambda b: (0xEE, b"Adobe" + b)),
            st.binary(max_size=64).map(lambda b: (0xFE, b)),
        )
    )
    return bytes([0xFF, marker]) + struct.pack(">H", len(payload) + 2) + payload


@st.composite
def jpeg_mutations(draw: st.DrawFn, data: bytes) -> bytes:
    """``data`` (a JPEG) with 0-3 marker-level mutations: SOF dimensions, precision and component count,
    dropped, duplicated or moved segments, wrong segment lengths, an inserted APP segment (bogus EXIF
    orientation, MPO index, ICC profile, Adobe transform, comment), a truncated scan, no EOI."""
    segments, scan = jpeg_segments(data)
    for _ in range(draw(st.integers(0, 3))):
        op = draw(st.sampled_from(["sof", "drop", "duplicate", "move", "length", "insert", "truncate_scan", "no_eoi"]))
        if op == "sof":
            sofs = [j for j, segment in enumerate(segments) if _is_sof(segment)]
            if sofs:
                j = draw(st.sampled_from(sofs))
                side = st.one_of(st.integers(0, 64), st.sampled_from([30_001, 65_535]))
                precision = draw(st.sampled_from([8, 8, 12, 16, 0]))
                fields = struct.pack(">BHH", precision, draw(side), draw(side))
                components = segments[j][9:10] if draw(st.booleans()) else bytes([draw(st.integers(0, 5))])
                segments[j] = segments[j][:4] + fields + components + segments[j][10:]
        elif op in ("drop", "duplicate", "move"):
            segments = rearranged(draw, segments, op, first=1)  # SOI stays first
        elif op == "length" and len(segments) > 1:
            i = draw(st.integers(1, len(segments) - 1))
            length = draw(st.sampled_from([0, 1, 2, 0xFFFF])) if draw(st.booleans()) else len(segments[i]) - 1
            segments[i] = segments[i][:2] + struct.pack(">H", length & 0xFFFF) + segments[i][4:]
        elif op == "insert":
            segments.insert(draw(st.integers(1, len(segments))), draw(jpeg_app_segments()))
        elif op == "truncate_scan":
            scan = scan[: draw(st.integers(0, len(scan)))]
        elif op == "no_eoi" and scan.endswith(b"\xff\xd9"):
            scan = scan[:-2]
    return b"".join(segments) + scan


# ---- TIFF tags ---------------------------------------------------------------------------------------------

#: Tags the decoder acts on: size, samples, compression, photometric, strips, orientation, planar, format.
TIFF_TAGS = (256, 257, 258, 259, 262, 273, 274, 277, 278, 279, 284, 317, 338, 339, 320)


@st.composite
def tiff_mutations(draw: st.DrawFn, data: bytes) -> bytes:
    """``data`` (a TIFF) with 0-3 entries of its first IFD rewritten: tag, type, count or value."""
    fmt = "<" if data[:2] == b"II" else ">"
    (ifd,) = struct.unpack_from(fmt + "I", data, 4)
    (count,) = struct.unpack_from(fmt + "H", data, ifd)
    data = bytearray(data)
    for _ in range(draw(st.integers(0, 3)) if count else 0):
        entry = ifd + 2 + 12 * draw(st.integers(0, count - 1))
        field = draw(st.sampled_from(["tag", "type", "count", "value"]))
        if field == "tag":
            struct.pack_into(fmt + "H", data, entry, draw(st.sampled_from(TIFF_TAGS)))
        elif field == "type":
            struct.pack_into(fmt + "H", data, entry + 2, draw(st.integers(0, 18)))
        elif field == "count":
            struct.pack_into(fmt + "I", data, entry + 4, draw(st.sampled_from([0, 1, 2, 3, 4, 255, 2**32 - 1])))
        else:
            value = st.one_of(st.integers(0, 16), st.sampled_from([255, 65535, 2**31 - 1, 2**32 - 1]))
            struct.pack_into(fmt + "I", data, entry + 8, draw(value))
    return bytes(data)


# ---- generic mutations and the whole pipeline ----------------------------------------------------------------


@st.composite
def byte_mutations(draw: st.DrawFn, data: bytes) -> bytes:
    """``data`` with 0-3 format-blind mutations: bit flips, truncation, deleted or repeated ranges, spliced bytes."""
    data = bytearray(data)
    for _ in range(draw(st.integers(0, 3))):
        if not data:
            break
        op = draw(st.sampled_from(["flip", "truncate", "delete", "repeat", "splice"]))
        start = draw(st.integers(0, len(data) - 1))
        end = draw(st.integers(start, min(len(data), start + 64)))
        if op == "flip":
            data[start] ^= draw(st.integers(1, 255))
        elif op == "truncate":
            del data[start:]
        elif op == "delete":
            del data[start:end]
        elif op == "repeat":
            data[start:start] = data[start:end] * draw(st.integers(1, 4))
        else:
            data[start:start] = draw(
                st.one_of(st.binary(min_size=1, max_size=32), images().map(lambda image: image.data))
            )
    return bytes(data)


@st.composite
def mutated_images(draw: st.DrawFn, formats: tuple[str, ...] = tuple(MODES)) -> EncodedImage:
    """A valid image of one of ``formats`` through structural mutations (PNG, JPEG, TIFF), then byte mutations
    (``format``, ``mode`` and ``size`` say what it was before)."""
    image = draw(images(formats))
    data = image.data
    if image.format == "PNG":
        data = draw(png_mutations(data))
    elif image.format == "JPEG":
        data = draw(jpeg_mutations(data))
    elif image.format == "TIFF":
        data = draw(tiff_mutations(data))
    return replace(image, data=draw(byte_mutations(data)))


@st.composite
def plain_pngs(draw: st.DrawFn, size: int, channels: int) -> bytes:
    """An 8-bit grey (1 channel) or RGB (3) PNG of ``size`` x ``size``: what ``plain_png_to_tensor`` decodes."""
    image = draw(pixels("L" if channels == 1 else "RGB", (size, size)))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=draw(st.integers(0, 9)))
    return buffer.getvalue()
