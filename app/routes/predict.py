"""``POST /predict`` and ``POST /predict/batch``: read the upload, hand it to the model's service."""

from __future__ import annotations

import asyncio
import time

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse

from app import request_log
from app.deps import ModelQuery, RegistryDep, SettingsDep, TopKQuery, require_api_key
from app.schemas import ERROR_RESPONSES, BatchPredictResponse, PredictResponse
from app.uploads import BATCH_BODY_OPENAPI, IMAGE_BODY_OPENAPI, read_images

router = APIRouter(tags=["predict"], dependencies=[Depends(require_api_key)], responses=ERROR_RESPONSES)


@router.post("/predict", response_model=PredictResponse, openapi_extra=IMAGE_BODY_OPENAPI)
async def predict(
    request: Request, registry: RegistryDep, settings: SettingsDep, model: ModelQuery = None, top_k: TopKQuery = 5
) -> JSONResponse:
    """Classify one image: multipart field `file`, or a raw `image/*` body."""
    deadline = time.monotonic() + settings.timeout_s
    service = registry.get(model)
    request_log.current().model = service.name
    with service.admitted():
        [data] = await read_images(request, field="file", limit=settings.max_upload_bytes)
        predictions = await service.classify(data, top_k, deadline)
    # Built by the engine in exactly PredictResponse's shape: skip re-validating it on the hot path.
    return JSONResponse({"model": service.name, "predictions": predictions})


@router.post("/predict/batch", response_model=BatchPredictResponse, openapi_extra=BATCH_BODY_OPENAPI)
async def predict_batch(
    request: Request, registry: RegistryDep, settings: SettingsDep, model: ModelQuery = None, top_k: TopKQuery = 5
) -> BatchPredictResponse:
    """Classify several images (multipart fields `files`); results in upload order."""
    deadline = time.monotonic() + settings.timeout_s
    service = registry.get(model)
    request_log.current().model = service.name
    with service.admitted():
        images = await read_images(
            request, field="files", limit=settings.max_upload_bytes, max_files=settings.max_batch_files
        )
        jobs = (service.classify(data, top_k, deadline) for data in images)
        outputs = await asyncio.gather(*jobs, return_exceptions=True)
    for output in outputs:
        if isinstance(output, BaseException):
            raise output
    return BatchPredictResponse(results=[PredictResponse(model=service.name, predictions=p) for p in outputs])
