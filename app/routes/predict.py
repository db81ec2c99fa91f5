"""``POST /predict`` and ``POST /predict/batch``: read the upload, hand it to the model's service.

Both are declared as ordinary FastAPI routes (their signatures are the OpenAPI description), but
served by ``ServingRoute``: its handler resolves exactly these parameters itself (settings, registry,
the API key, the query validated by ``PredictQuery``) and calls the endpoint, instead of FastAPI's
general dependency solver and response validation. On the hot path that machinery cost about as
much as everything else in a request together (docs/performance.md). Errors are the app's: a
``ServeError`` becomes its status and JSON detail, a bad query FastAPI's 422.
"""

from __future__ import annotations

import asyncio
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
from app.deps import RegistryDep, SettingsDep, check_api_key, require_api_key
from app.registry import ModelRegistry
from app.schemas import ERROR_RESPONSES, BatchPredictResponse, PredictQuery, PredictResponse
from app.settings import Settings
from app.uploads import BATCH_BODY_OPENAPI, IMAGE_BODY_OPENAPI, read_images

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


@router.post("/predict", response_model=PredictResponse, openapi_extra=IMAGE_BODY_OPENAPI)
async def predict(
    request: Request, registry: RegistryDep, settings: SettingsDep, query: Annotated[PredictQuery, Query()]
) -> Response:
    """Classify one image: multipart field `file`, or a raw `image/*` body."""
    deadline = time.monotonic() + settings.timeout_s
    service = registry.get(query.model)
    request_log.current().model = service.name
    with service.admitted():
        [data] = await read_images(request, field="file", limit=settings.max_upload_bytes)
        predictions = await service.classify(data, query.top_k, deadline)
    # Built by the engine in exactly PredictResponse's shape: not re-validated on the hot path.
    return _json({"model": service.name, "predictions": predictions})


@router.post("/predict/batch", response_model=BatchPredictResponse, openapi_extra=BATCH_BODY_OPENAPI)
async def predict_batch(
    request: Request, registry: RegistryDep, settings: SettingsDep, query: Annotated[PredictQuery, Query()]
) -> Response:
    """Classify several images (multipart fields `files`); results in upload order."""
    deadline = time.monotonic() + settings.timeout_s
    service = registry.get(query.model)
    request_log.current().model = service.name
    with service.admitted():
        images = await read_images(
            request, field="files", limit=settings.max_upload_bytes, max_files=settings.max_batch_files
        )
        jobs = (service.classify(data, query.top_k, deadline) for data in images)
        outputs = await asyncio.gather(*jobs, return_exceptions=True)
    for output in outputs:
        if isinstance(output, BaseException):
            raise output
    return _json({"results": [{"model": service.name, "predictions": p} for p in outputs]})
