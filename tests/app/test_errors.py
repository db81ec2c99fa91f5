"""app.errors: each exception becomes its status with a JSON detail, never an internal exception's text.

(Surprises become a JSON 500 in ``app.middleware``: tests/app/test_middleware.py.)"""

from __future__ import annotations

import asyncio

import httpx
import pytest
from fastapi import FastAPI
from prometheus_client.parser import text_string_to_metric_families

from app.errors import (
    BodyTimeout,
    BytesBudgetExhausted,
    DeadlineExceeded,
    DecodeBudgetExceeded,
    InferenceFailed,
    InvalidImage,
    Overloaded,
    PayloadTooLarge,
    ServeError,
    Unauthorized,
    UnknownModel,
    UnsupportedMediaType,
    install_error_handlers,
)
from app.metrics import REJECTION_REASONS, Metrics

RAISES: dict[str, Exception] = {
    "400": InvalidImage("bad pixels"),
    "401": Unauthorized("who are you"),
    "404": UnknownModel("no such model"),
    "413": PayloadTooLarge("too big"),
    "415": UnsupportedMediaType("text/plain"),
    "503": Overloaded("queue full"),
    "504": DeadlineExceeded("too slow"),
}


def get(path: str, raises: dict[str, Exception] = RAISES) -> httpx.Response:
    app = FastAPI()
    install_error_handlers(app)

    @app.get("/raise/{status}")
    async def boom(status: str) -> None:
        raise raises[status]

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
    assert isinstance(exc, ServeError) and r.json()["detail"] == exc.detail


def test_headers_for_retry_and_auth() -> None:
    assert get("/raise/503").headers["retry-after"] == "1"
    assert get("/raise/401").headers["www-authenticate"] == "Bearer"


def test_a_failed_forward_answers_a_fixed_detail_and_logs_the_reason(caplog: pytest.LogCaptureFixture) -> None:
    failure = InferenceFailed("inference failed: RuntimeError: CUDA error in /opt/build/kernels.cu")
    r = get("/raise/500", {"500": failure})
    assert r.status_code == 500
    assert r.json() == {"detail": InferenceFailed.PUBLIC_DETAIL}
    assert "CUDA" not in r.text and "/opt" not in r.text
    [record] = [r for r in caplog.records if r.name == "app.errors"]
    assert "CUDA error in /opt/build/kernels.cu" in record.getMessage()


def test_every_refusal_is_counted_by_reason() -> None:
    app = FastAPI()
    app.state.metrics = metrics = Metrics()
    install_error_handlers(app)
    refusals: dict[str, Exception] = {
        "bad_image": InvalidImage("x"),
        "unauthorized": Unauthorized("x"),
        "too_large": DecodeBudgetExceeded("x"),
        "queue_full": Overloaded("x"),
        "bytes_budget": BytesBudgetExhausted("x"),
        "deadline": DeadlineExceeded("x"),
        "body_timeout": BodyTimeout("x"),
        "bad_request": UnsupportedMediaType("x"),
    }

    @app.get("/raise/{reason}")
    async def boom(reason: str, n: int = 1) -> None:
        raise refusals[reason]

    async def main() -> None:
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            for reason in refusals:
                await client.get(f"/raise/{reason}")
            assert (await client.get("/raise/bad_image?n=x")).status_code == 422  # FastAPI's: bad_request too
            assert (await client.get("/nowhere")).status_code == 404  # not a refusal

    asyncio.run(main())
    [family] = [
        f for f in text_string_to_metric_families(metrics.render().decode()) if f.name == "resnet_serve_rejected"
    ]
    counts = {s.labels["reason"]: s.value for s in family.samples if s.name == "resnet_serve_rejected_total"}
    assert counts == {**dict.fromkeys(REJECTION_REASONS, 0.0), **dict.fromkeys(refusals, 1.0), "bad_request": 2.0}
