"""``GET /`` and ``GET /static/{name}``: the web page (``app/static``), served without the API key.

Three fixed files, read once, no build step. The page's own script asks for the key (when the server has
one) and sends it with each API call; the files themselves are no secret. Every answer carries a strict
Content-Security-Policy (only this origin's script, style and API; ``blob:`` images for the preview) and
``nosniff``; an ``ETag`` with ``Cache-Control: no-cache`` lets browsers keep the files until they change.
"""

from __future__ import annotations

import functools
import hashlib
from pathlib import Path

from fastapi import APIRouter, HTTPException, Request, Response

__all__ = ["CONTENT_SECURITY_POLICY", "router"]

STATIC = Path(__file__).resolve().parent.parent / "static"
CONTENT_TYPES = {
    "index.html": "text/html; charset=utf-8",
    "page.js": "text/javascript; charset=utf-8",
    "page.css": "text/css; charset=utf-8",
}
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob:; connect-src 'self'; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}

router = APIRouter(include_in_schema=False)


@functools.cache
def _read(name: str) -> tuple[bytes, str]:
    """The file's bytes and its ETag."""
    data = (STATIC / name).read_bytes()
    return data, '"' + hashlib.sha256(data).hexdigest()[:16] + '"'


def _serve(request: Request, name: str) -> Response:
    data, etag = _read(name)
    headers = {**HEADERS, "ETag": etag}
    if request.headers.get("if-none-match") == etag:
        return Response(status_code=304, headers=headers)
    return Response(data, media_type=CONTENT_TYPES[name], headers=headers)


@router.get("/")
async def page(request: Request) -> Response:
    """The page: choose, drop or paste an image, see the top-k labels."""
    return _serve(request, "index.html")


@router.get("/static/{name}")
async def static(request: Request, name: str) -> Response:
    """The page's script and style sheet (and the page itself); nothing else."""
    if name not in CONTENT_TYPES:
        raise HTTPException(404, "not found")
    return _serve(request, name)
