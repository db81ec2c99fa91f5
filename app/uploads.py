"""Reading image uploads off the wire: size limit while streaming, content type, multipart fields.

Everything here happens before a single pixel is decoded: a body over the limit is refused as soon
as its Content-Length (or the running byte count) says so, without buffering the rest.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator

from fastapi import Request
from python_multipart.multipart import parse_options_header
from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.requests import ClientDisconnect

from app.errors import BadRequest, PayloadTooLarge, UnsupportedMediaType

__all__ = ["read_images", "IMAGE_BODY_OPENAPI", "BATCH_BODY_OPENAPI"]

RAW_TYPES = ("application/octet-stream",)


def _is_image_type(content_type: str | None) -> bool:
    media = (content_type or "").split(";", 1)[0].strip().lower()
    return media.startswith("image/") or media in RAW_TYPES


def _refuse_declared_oversize(request: Request, limit: int) -> None:
    """413 at once when the Content-Length header already says the body is over ``limit``."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"body of {int(declared)} bytes exceeds the {limit} byte limit (--max-upload-mb)")


async def _limited(request: Request, limit: int) -> AsyncGenerator[bytes, None]:
    _refuse_declared_oversize(request, limit)
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"body exceeds the {limit} byte limit (--max-upload-mb)")
        yield chunk


async def _raw_body(request: Request, limit: int) -> bytes:
    """The whole body of a raw upload, refused (413) as soon as it is known to exceed ``limit``."""
    _refuse_declared_oversize(request, limit)
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnect()
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"body exceeds the {limit} byte limit (--max-upload-mb)")
        if not message.get("more_body", False):
            return chunk if not chunks else b"".join([*chunks, chunk])  # one chunk: no copy
        chunks.append(chunk)


async def read_images(request: Request, *, field: str, limit: int, max_files: int = 1) -> list[bytes]:
    """The image bytes of a request: multipart field ``field`` (up to ``max_files``) or a raw ``image/*`` body."""
    content_type = request.headers.get("content-type", "")
    if _is_image_type(content_type):
        return [await _raw_body(request, limit)]
    media, _ = parse_options_header(content_type)
    if media == b"multipart/form-data":
        parser = MultiPartParser(
            request.headers, _limited(request, limit), max_files=max_files, max_fields=16, max_part_size=limit
        )
        try:
            form = await parser.parse()
        except MultiPartException as exc:
            raise BadRequest(f"malformed multipart body: {exc.message}") from None
        try:
            uploads = [value for value in form.getlist(field) if isinstance(value, UploadFile)]
            if not uploads:
                raise BadRequest(f"multipart body has no {field!r} file field")
            for upload in uploads:
                if upload.content_type and not _is_image_type(upload.content_type):
                    raise UnsupportedMediaType(
                        f"part {upload.filename!r} is {upload.content_type}; send an image/* file"
                    )
            return [await upload.read() for upload in uploads]
        finally:
            await form.close()
    raise UnsupportedMediaType(
        f"content type {content_type or 'none'!r} is not supported; send multipart/form-data or an image/* body"
    )


def _multipart_schema(field: str, many: bool) -> dict:
    binary = {"type": "string", "format": "binary"}
    return {
        "type": "object",
        "required": [field],
        "properties": {field: {"type": "array", "items": binary} if many else binary},
    }


IMAGE_BODY_OPENAPI = {
    "requestBody": {
        "required": True,
        "description": "The image: multipart field `file`, or the raw bytes with an `image/*` content type.",
        "content": {
            "multipart/form-data": {"schema": _multipart_schema("file", many=False)},
            "image/*": {"schema": {"type": "string", "format": "binary"}},
        },
    }
}

BATCH_BODY_OPENAPI = {
    "requestBody": {
        "required": True,
        "description": "Several images as repeated multipart fields `files`.",
        "content": {"multipart/form-data": {"schema": _multipart_schema("files", many=True)}},
    }
}
