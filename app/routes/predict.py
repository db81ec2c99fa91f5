"""``POST /predict`` and ``POST /predict/batch``: read the upload, hand it to the model's service.

Both are declared as ordinary FastAPI routes (their signatures are the OpenAPI description), but
served by ``ServingRoute``: its handler resolves exactly these parameters itself (settings, registry,
the API key, the query validated by ``PredictQuery``) and calls the endpoint, instead of FastAPI's
general dependency solver and response validation. On the hot path that machinery cost about as
much as everything else in a request together (docs/performance.md). Errors are the app's: a
``ServeError`` becomes its status and JSON detail, a bad query FastAPI's 422.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Coroutine
from typing import Annotated, Any
from urllib.parse import parse_qsl

import orjson
from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from pydantic import ValidationError

from app import request_log
from app.admission import ByteBudget, UploadPace
from app.deps import RegistryDep, SettingsDep, check_api_key, require_api_key
from app.disconnect import DisconnectWatch
from app.registry import ModelRegistry
from app.schemas import ERROR_RESPONSES, BatchPredictResponse, PredictQuery, PredictResponse
from app.service import ModelService, Predictions
from app.settings import Settings
from app.uploads import BATCH_BODY_OPENAPI, IMAGE_BODY_OPENAPI, BodyReader, read_images

__all__ = ["ServingRoute", "parse_query", "router"]

_DEFAULT_QUERY = PredictQuery()

Endpoint = Callable[[Request, ModelRegistry, Settings, PredictQuery], Coroutine[Any, Any, Response]]


def parse_query(query_string: bytes) -> PredictQuery:
    """The request's ``model`` and ``top_k``; FastAPI's 422 (same shape, ``loc`` under ``query``) when invalid."""
    if not query_string:
        return _DEFAULT_QUERY
    try:
        return PredictQuery.model_validate(dict(parse_qsl(query_string.decode("latin-1"), keep_blank_values=True)))
    except ValidationError as exc:
        errors = [{**error, "loc": ("query", *error["loc"])} for error in exc.errors(include_url=False)]
        raise RequestValidationError(errors) from None


class ServingRoute(APIRoute):
    """An ``APIRoute`` whose handler passes ``(request, registry, settings, query)`` straight to the endpoint."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        endpoint: Endpoint = self.endpoint

        async def handle(request: Request) -> Response:
            state = request.app.state
            settings: Settings = state.settings
            check_api_key(settings, request.headers.get("authorization"))
            query = parse_query(request.scope["query_string"])
            return await endpoint(request, state.registry, settings, query)

        return handle


def _json(content: Any) -> Response:
    return Response(orjson.dumps(content), media_type="application/json")


router = APIRouter(
    tags=["predict"],
    dependencies=[Depends(require_api_key)],  # documents the scheme; ServingRoute checks the key itself
    responses=ERROR_RESPONSES,
    route_class=ServingRoute,
)


async def _classify(
    request: Request, registry: ModelRegistry, settings: Settings, query: PredictQuery, *, field: str, max_files: int
) -> tuple[ModelService, list[Predictions]]:
    """The whole life of a prediction request, each limit checked before the work it guards.

    Queue capacity and the byte budget before the body is read (503); the body at its pace (408) and
    size (413); a queue slot per image and the pixel budget before decoding (``ModelService.classify``);
    from then on, a client that hangs up cancels its work.
    """
    deadline = time.monotonic() + settings.timeout_s
    service = registry.get(query.model)
    request_log.current().model = service.name
    with service.admitted():
        service.check_capacity()
        pace = UploadPace(time.monotonic(), deadline, settings.upload_grace_s, settings.min_upload_rate_kb * 1024)
        budget: ByteBudget = request.app.state.byte_budget
        with BodyReader(request, limit=settings.max_upload_bytes, budget=budget, pace=pace) as reader:
            images = await read_images(request, reader, field=field, max_files=max_files)
            with DisconnectWatch(request.receive):
                return service, await service.classify(images, query.top_k, deadline, reader.lease)


@router.post("/predict", response_model=PredictResponse, openapi_extra=IMAGE_BODY_OPENAPI)
async def predict(
    request: Request, registry: RegistryDep, settings: SettingsDep, query: Annotated[PredictQuery, Query()]
) -> Response:
    """Classify one image: multipart field `file`, or a raw `image/*` body."""
    service, [predictions] = await _classify(request, registry, settings, query, field="file", max_files=1)
    # Built by the engine in exactly PredictResponse's shape: not re-validated on the hot path.
    return _json({"model": service.name, "version": service.version, "predictions": predictions})


@router.post("/predict/batch", response_model=BatchPredictResponse, openapi_extra=BATCH_BODY_OPENAPI)
async def predict_batch(
    request: Request, registry: RegistryDep, settings: SettingsDep, query: Annotated[PredictQuery, Query()]
) -> Response:
    """Classify several images (multipart fields `files`); results in upload order."""
    service, outputs = await _classify(
        request, registry, settings, query, field="files", max_files=settings.max_batch_files
    )
    model, version = service.name, service.version
    return _json({"results": [{"model": model, "version": version, "predictions": p} for p in outputs]})
