"""app.errors: each exception becomes its status with a JSON detail; surprises become a JSON 500."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from fastapi import FastAPI

from app.errors import (
    DeadlineExceeded,
    InvalidImage,
    Overloaded,
    PayloadTooLarge,
    ServeError,
    Unauthorized,
    UnknownModel,
    UnsupportedMediaType,
    install_error_handlers,
)

RAISES: dict[str, Exception] = {
    "400": InvalidImage("bad pixels"),
    "401": Unauthorized("who are you"),
    "404": UnknownModel("no such model"),
    "413": PayloadTooLarge("too big"),
    "415": UnsupportedMediaType("text/plain"),
    "503": Overloaded("queue full"),
    "504": DeadlineExceeded("too slow"),
    "500": RuntimeError("a bug"),
}


def get(path: str) -> httpx.Response:
    app = FastAPI()
    install_error_handlers(app)

    @app.get("/raise/{status}")
    async def boom(status: str) -> None:
        raise RAISES[status]

    async def main() -> httpx.Response:
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            return await client.get(path)

    return asyncio.run(main())


@pytest.mark.parametrize("status", list(RAISES))
def test_status_and_json_detail(status: str) -> None:
    r = get(f"/raise/{status}")
    assert r.status_code == int(status)
    exc = RAISES[status]
    assert r.json()["detail"] == (exc.detail if isinstance(exc, ServeError) else "internal server error")


def test_headers_for_retry_and_auth() -> None:
    assert get("/raise/503").headers["retry-after"] == "1"
    assert get("/raise/401").headers["www-authenticate"] == "Bearer"
