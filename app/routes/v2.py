"""The Open Inference Protocol (KServe v2) over HTTP, beside the native API: health, metadata, ``infer``.

``/v2/health/live`` and ``/v2/health/ready`` are ``/health`` and ``/ready`` (never behind the API key);
everything else is behind it like ``/predict``. An inference request goes the way of ``/predict``: the
model admitted, its queue capacity and the byte budget checked before the body is read, the body read at
its pace and within ``--max-upload-mb``, then its images decoded (``BYTES``, ``ModelService.classify``) or
taken as they are (``UINT8``/``FP32`` tensors, ``ModelService.classify_pixels``) and batched with
``/predict``'s. Errors are the native ones, rendered as ``{"error": ...}`` (``app.errors``).
"""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter, Depends, Request, Response

from app import __version__, request_log
from app.admission import ByteBudget, UploadPace
from app.deps import RegistryDep, SettingsDep, require_api_key
from app.disconnect import DisconnectWatch
from app.engine import Engine
from app.errors import NotReady, UnknownModel
from app.registry import ModelRegistry
from app.routes import ops
from app.service import ModelService, ModelState
from app.settings import Settings
from app.uploads import BodyReader
from app.v2_protocol import (
    HEADER_LENGTH,
    IMAGE_INPUT,
    OUTPUT,
    PIXELS_INPUT,
    encoded_images,
    infer_response,
    parse_infer_request,
    pixel_tensors,
)
from app.v2_schemas import V2_ERROR_RESPONSES, V2InferResponse, V2ModelMetadata, V2ServerMetadata

__all__ = ["router"]

PLATFORM = "resnet-serve"
EXTENSIONS = ["binary_tensor_data", "classification"]
_EMPTY_200: dict[int | str, dict[str, Any]] = {200: {"description": "yes (no body)", "content": {}}}

health_router = APIRouter(prefix="/v2", tags=["v2"], responses={503: V2_ERROR_RESPONSES[503]})
model_router = APIRouter(
    prefix="/v2", tags=["v2"], dependencies=[Depends(require_api_key)], responses=V2_ERROR_RESPONSES
)

INFER_BODY_OPENAPI = {
    "requestBody": {
        "required": True,
        "description": (
            f"One input: {IMAGE_INPUT!r} (BYTES, base64 images in JSON) or {PIXELS_INPUT!r} (UINT8, or FP32 in "
            f"[0, 1], [N, C, H, W]); outputs: {OUTPUT!r}, parameters.classification for labels. With the binary "
            f"tensor data extension: {HEADER_LENGTH} bytes of JSON, then the raw tensors."
        ),
        "content": {
            "application/json": {"schema": {"type": "object"}},
            "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
        },
    }
}


@health_router.get("/health/live", response_class=Response, responses=_EMPTY_200)
async def live(registry: RegistryDep, settings: SettingsDep) -> Response:
    """Liveness, as `/health`."""
    await ops.health(registry, settings)
    return Response()


@health_router.get("/health/ready", response_class=Response, responses=_EMPTY_200)
async def ready(request: Request, registry: RegistryDep) -> Response:
    """Readiness, as `/ready`: every model loaded and warm."""
    await ops.ready(request, registry)
    return Response()


@model_router.get("", response_model=V2ServerMetadata)
async def server_metadata() -> V2ServerMetadata:
    """The server's name, version and protocol extensions."""
    return V2ServerMetadata(name=PLATFORM, version=__version__, extensions=EXTENSIONS)


def _service(registry: ModelRegistry, name: str, version: str | None) -> ModelService:
    """The model's service (404 unknown, 503 loading); 404 when ``version`` is not the one it serves."""
    service = registry.get(name)
    if version is not None and version != service.version:
        raise UnknownModel(f"model {name!r} serves version {service.version!r}, not {version!r}")
    return service


def _engine(service: ModelService) -> Engine:
    if service.engine is None:
        raise NotReady(f"model {service.name!r} is {service.state}")
    return service.engine


@model_router.get("/models/{model_name}", response_model=V2ModelMetadata)
async def model_metadata(registry: RegistryDep, model_name: str) -> V2ModelMetadata:
    """The model's version, inputs (encoded images, or pixel tensors at its input size) and output."""
    return _metadata(_service(registry, model_name, None))


@model_router.get("/models/{model_name}/versions/{model_version}", response_model=V2ModelMetadata)
async def version_metadata(registry: RegistryDep, model_name: str, model_version: str) -> V2ModelMetadata:
    """The model's metadata, if it serves that version."""
    return _metadata(_service(registry, model_name, model_version))


def _metadata(service: ModelService) -> V2ModelMetadata:
    engine = _engine(service)
    pixels = [-1, *engine.input_shape]
    return V2ModelMetadata.model_validate(
        {
            "name": service.name,
            "versions": [service.version or ""],
            "platform": PLATFORM,
            "inputs": [
                {"name": IMAGE_INPUT, "datatype": "BYTES", "shape": [-1]},
                {"name": PIXELS_INPUT, "datatype": "UINT8", "shape": pixels},  # or FP32 in [0, 1]
            ],
            "outputs": [{"name": OUTPUT, "datatype": "FP32", "shape": [-1, len(engine.metadata.labels)]}],
        }
    )


@model_router.get("/models/{model_name}/ready", response_class=Response, responses=_EMPTY_200)
async def model_ready(registry: RegistryDep, model_name: str) -> Response:
    """200 when the model serves; 404 unknown, 503 loading or draining."""
    return _ready(_service(registry, model_name, None))


@model_router.get("/models/{model_name}/versions/{model_version}/ready", response_class=Response, responses=_EMPTY_200)
async def version_ready(registry: RegistryDep, model_name: str, model_version: str) -> Response:
    """200 when the model serves that version."""
    return _ready(_service(registry, model_name, model_version))


def _ready(service: ModelService) -> Response:
    if service.state is not ModelState.READY:
        raise NotReady(f"model {service.name!r} is {service.state}")
    return Response()


@model_router.post("/models/{model_name}/infer", response_model=V2InferResponse, openapi_extra=INFER_BODY_OPENAPI)
async def infer(request: Request, registry: RegistryDep, settings: SettingsDep, model_name: str) -> Response:
    """Classify one or more images: encoded (BYTES) or pixel tensors (UINT8, FP32); JSON or binary tensors."""
    return await _infer(request, registry, settings, model_name, None)


@model_router.post(
    "/models/{model_name}/versions/{model_version}/infer",
    response_model=V2InferResponse,
    openapi_extra=INFER_BODY_OPENAPI,
)
async def version_infer(
    request: Request, registry: RegistryDep, settings: SettingsDep, model_name: str, model_version: str
) -> Response:
    """`infer`, if the model serves that version."""
    return await _infer(request, registry, settings, model_name, model_version)


async def _infer(
    request: Request, registry: ModelRegistry, settings: Settings, model_name: str, model_version: str | None
) -> Response:
    """The whole life of an inference request, each limit checked before the work it guards (as ``/predict``)."""
    deadline = time.monotonic() + settings.timeout_s
    service = _service(registry, model_name, model_version)
    request_log.current().model = service.name
    with service.admitted():
        service.check_capacity()
        engine = _engine(service)
        num_classes = len(engine.metadata.labels)
        pace = UploadPace(time.monotonic(), deadline, settings.upload_grace_s, settings.min_upload_rate_kb * 1024)
        budget: ByteBudget = request.app.state.byte_budget
        with BodyReader(request, limit=settings.max_upload_bytes, budget=budget, pace=pace) as reader:
            parsed = parse_infer_request(await reader.body(), request.headers.get(HEADER_LENGTH))
            with DisconnectWatch(request.receive):
                # Every class for each image (the probabilities output); the body stays leased until the end.
                if parsed.datatype == "BYTES":
                    images = encoded_images(parsed, settings.max_batch_files)
                    predictions = await service.classify(images, num_classes, deadline)
                else:
                    tensors = pixel_tensors(parsed, engine.input_shape, settings.max_batch_files)
                    predictions = await service.classify_pixels(tensors, num_classes, deadline)
    content, header_length = infer_response(service.name, service.version, parsed, predictions, num_classes)
    if header_length is None:
        return Response(content, media_type="application/json")
    return Response(content, media_type="application/octet-stream", headers={HEADER_LENGTH: str(header_length)})


router = APIRouter()
router.include_router(health_router)
router.include_router(model_router)
