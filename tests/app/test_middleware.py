"""app.middleware: request ids, per-route metrics, the one log line per request with its fields, and the JSON
500 (with the request id) for an unexpected exception."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Annotated

import httpx
import pytest
from fastapi import APIRouter, FastAPI, Query, Request, Response

from app import request_log
from app.deps import RegistryDep, SettingsDep
from app.errors import InvalidImage, install_error_handlers
from app.fast_path import FastPathMiddleware
from app.main import create_app
from app.metrics import Metrics
from app.middleware import RequestContextMiddleware
from app.registry import ModelRegistry
from app.routes.predict import ServingRoute
from app.schemas import PredictQuery
from app.settings import Settings


def make_app(metrics: Metrics) -> FastAPI:
    app = FastAPI()
    install_error_handlers(app)

    @app.get("/items/{item}")
    async def item(item: str) -> dict[str, str]:
        log = request_log.current()
        log.model = "m"
        log.record_preprocess(0.002)

        async def one_image(queue_s: float) -> None:  # tasks spawned by the request share its log
            request_log.current().record_batch(4, queue_s, 0.010)

        await asyncio.gather(one_image(0.001), one_image(0.003))
        if item == "bad":
            raise InvalidImage("bad pixels")
        return {"item": item}

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    app.add_middleware(RequestContextMiddleware, metrics=metrics)
    return app


def call(app: FastAPI, path: str, headers: dict[str, str] | None = None) -> httpx.Response:
    async def main() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            return await client.get(path, headers=headers)

    return asyncio.run(main())


def access_lines(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "app.access"]


def test_a_valid_request_id_is_echoed_and_an_invalid_one_replaced() -> None:
    app = make_app(Metrics())
    assert call(app, "/items/a", {"X-Request-ID": "abc-123"}).headers["x-request-id"] == "abc-123"
    replaced = call(app, "/items/a", {"X-Request-ID": "bad id with spaces"}).headers["x-request-id"]
    assert replaced != "bad id with spaces" and len(replaced) == 32 and int(replaced, 16) >= 0
    assert call(app, "/items/a").headers["x-request-id"] != call(app, "/items/a").headers["x-request-id"]


def test_requests_are_counted_by_route_template_and_status() -> None:
    metrics = Metrics()
    app = make_app(metrics)
    call(app, "/items/a")
    call(app, "/items/b")
    call(app, "/items/bad")
    call(app, "/nowhere")
    text = metrics.render().decode()
    assert 'resnet_serve_requests_total{route="/items/{item}",status="200"} 2.0' in text
    assert 'resnet_serve_requests_total{route="/items/{item}",status="400"} 1.0' in text
    assert 'resnet_serve_requests_total{route="unmatched",status="404"} 1.0' in text
    assert 'resnet_serve_request_duration_seconds_count{route="/items/{item}"} 3.0' in text


def test_one_log_line_per_request_carries_the_request_log(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="app.access")
    response = call(make_app(Metrics()), "/items/bad", {"X-Request-ID": "req-1"})
    [line] = access_lines(caplog)
    assert line.levelno == logging.INFO
    fields = vars(line)
    assert (fields["request_id"], fields["status"], fields["path"]) == ("req-1", response.status_code, "/items/bad")
    assert fields["model"] == "m" and fields["images"] == 1 and fields["preprocess_ms"] == 2.0
    assert fields["batch_size"] == [4, 4] and fields["queue_ms"] == 3.0 and fields["inference_ms"] == 10.0


def test_successful_probes_log_at_debug_only(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="app.access")
    call(make_app(Metrics()), "/health")
    assert access_lines(caplog) == []


SECRET = "token=s3cr3t in /srv/models/private.safetensors"


def error_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "app.errors"]


def assert_internal_error(response: httpx.Response, request_id: str, caplog: pytest.LogCaptureFixture) -> None:
    """A JSON 500 with the request id and nothing of the exception; the exception logged with the id."""
    assert response.status_code == 500
    assert response.json() == {"detail": "internal server error"}
    assert response.headers["x-request-id"] == request_id
    assert "s3cr3t" not in response.text and "/srv" not in response.text
    [error] = error_records(caplog)
    assert error.request_id == request_id  # type: ignore[attr-defined]
    assert error.exc_info is not None and SECRET in str(error.exc_info[1])
    [access] = access_lines(caplog)
    assert (access.request_id, access.status) == (request_id, 500)  # type: ignore[attr-defined]


def test_an_unexpected_exception_in_a_route_is_a_json_500_with_the_request_id(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    app = create_app(Settings(weights_dir=tmp_path, device="cpu"))

    @app.get("/boom")
    async def boom() -> None:
        raise RuntimeError(SECRET)

    assert_internal_error(call(app, "/boom", {"X-Request-ID": "req-500"}), "req-500", caplog)


def test_an_unexpected_exception_on_the_fast_path_is_a_json_500_with_the_request_id(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    router = APIRouter(route_class=ServingRoute)

    @router.post("/explode")
    async def explode(
        request: Request, registry: RegistryDep, settings: SettingsDep, query: Annotated[PredictQuery, Query()]
    ) -> Response:
        raise RuntimeError(SECRET)

    app = FastAPI()  # the route is only on the fast path: through the router it would be a 404
    app.state.settings = Settings(weights_dir=tmp_path, device="cpu")
    app.state.registry = ModelRegistry(tmp_path)
    install_error_handlers(app)
    routes = [route for route in router.routes if isinstance(route, ServingRoute)]
    app.add_middleware(FastPathMiddleware, routes=routes, exception_handlers=app.exception_handlers)
    app.add_middleware(RequestContextMiddleware, metrics=Metrics())

    async def main() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            return await client.post("/explode", headers={"X-Request-ID": "fast-500"})

    assert_internal_error(asyncio.run(main()), "fast-500", caplog)
