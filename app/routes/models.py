"""``GET /models``, ``GET /models/{name}``, ``GET /models/{name}/profile`` and the model control API.

``POST /models/{name}/load|unload|reload|rollback`` (``app.model_control``) answer 403 unless the server
was started with ``--model-control``; like every route here they need the ``--api-key``.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Annotated

from fastapi import APIRouter, Depends, Request

from app.deps import RegistryDep, SettingsDep, presented_api_key, require_api_key
from app.errors import Forbidden, NotReady
from app.model_control import ControlResult, ModelControl
from app.registry import LOAD_FAILED, ModelRegistry
from app.schemas import (
    ERROR_RESPONSES,
    CheckpointStatus,
    ControlResponse,
    ModelInfo,
    ModelList,
    Profile,
    ProfileRow,
    Refusal,
    error_response,
)
from app.service import ModelService
from app.weights_watch import checkpoint_stats
from models import CheckpointError, CheckpointMetadata, read_metadata

router = APIRouter(
    prefix="/models",
    tags=["models"],
    dependencies=[Depends(require_api_key)],
    responses={401: ERROR_RESPONSES[401]},
)

#: Metadata about the machine a model was trained on rather than the model: the command line and the
#: resolved arguments, which name data, output and resume paths. Only a request with the API key sees them.
PRIVATE_METADATA = ["metadata.provenance.command", "metadata.training.args"]
REDACTED = "[redacted]"


async def _shows_private_metadata(request: Request, settings: SettingsDep) -> bool:
    """Whether the request presented the ``--api-key`` (never true when no key is configured)."""
    return presented_api_key(settings, request.headers.get("authorization"))


ShowsPrivateDep = Annotated[bool, Depends(_shows_private_metadata)]


def _redacted(metadata: CheckpointMetadata) -> CheckpointMetadata:
    """``metadata`` with ``PRIVATE_METADATA`` blanked."""
    training, provenance = replace(metadata.training, args={}), replace(metadata.provenance, command=REDACTED)
    return replace(metadata, training=training, provenance=provenance)


def _info(registry: ModelRegistry, service: ModelService, *, private: bool) -> ModelInfo:
    engine = service.engine
    if engine is None:
        raise NotReady(f"model {service.name!r} is {service.state}")
    return ModelInfo(
        name=service.name,
        default=service.name == registry.default,
        state=service.state,
        version=service.version,
        loaded_at=service.loaded_at,
        device=engine.device_name,
        precision=engine.precision,
        batch_cap=engine.batch_cap,
        warmup_ms=engine.warmup_ms,
        variant=engine.variant,
        optimization=engine.optimization,
        metadata=engine.metadata if private else _redacted(engine.metadata),
        redacted=[] if private else PRIVATE_METADATA,
    )


def _control(request: Request) -> ModelControl:
    control: ModelControl | None = getattr(request.app.state, "control", None)
    if control is None:
        raise NotReady("the service is starting")
    return control


ControlDep = Annotated[ModelControl, Depends(_control)]


def _recorded_accuracy(registry: ModelRegistry, name: str, service: ModelService | None) -> float | None:
    if service is not None and service.engine is not None:
        return service.engine.metadata.training.test_accuracy
    try:
        return read_metadata(registry.weights_dir / f"{name}.safetensors").training.test_accuracy
    except (CheckpointError, OSError):
        return None


def _status(registry: ModelRegistry, control: ModelControl, name: str, *, private: bool) -> CheckpointStatus:
    """One checkpoint's row of ``GET /models``."""
    service = registry.services.get(name)
    operation = control.busy.get(name)
    if service is not None:
        state = str(service.state)
    elif operation in ("load", "reload") or (name in registry.paths and registry.state == "starting"):
        state = "loading"
    elif name in registry.failures:
        state = "failed"
    else:
        state = "unloaded"
    refusal = control.refusals.get(name)
    previous = control.previous.get(name)
    check = control.checks.get(name)
    reason = None
    if state == "failed":
        reason = registry.failures[name] if private else LOAD_FAILED
    return CheckpointStatus(
        name=name,
        state=state,
        default=name == registry.default,
        version=service.version if service is not None else None,
        loaded_at=service.loaded_at if service is not None else None,
        accuracy=_recorded_accuracy(registry, name, service),
        batch_cap=service.engine.batch_cap if service is not None and service.engine is not None else None,
        operation=operation,
        previous_version=previous.version if previous is not None else None,
        check=check.summary if check is not None else None,
        refusal=Refusal(version=refusal.version, check=refusal.check, reason=refusal.reason, at=refusal.at)
        if refusal is not None
        else None,
        reason=reason,
    )


@router.get("", response_model=ModelList, responses={503: ERROR_RESPONSES[503]})
async def list_models(
    request: Request, registry: RegistryDep, control: ControlDep, private: ShowsPrivateDep
) -> ModelList:
    """List the served models, the default one, checkpoints that failed to load, and every checkpoint with its state."""
    models = [_info(registry, service, private=private) for service in registry.services.values()]
    failed = dict.fromkeys(registry.failures, LOAD_FAILED)  # the reasons are in the log, not for clients
    names = sorted(checkpoint_stats(registry.weights_dir).keys() | registry.services.keys() | registry.failures.keys())
    checkpoints = [_status(registry, control, name, private=private) for name in names]
    return ModelList(default=registry.default, models=models, failed=failed, checkpoints=checkpoints)


@router.get("/{name}", response_model=ModelInfo, responses={404: ERROR_RESPONSES[404], 503: ERROR_RESPONSES[503]})
async def get_model(name: str, registry: RegistryDep, private: ShowsPrivateDep) -> ModelInfo:
    """Describe one model: state, version, device, precision, batch cap, labels, preprocessing, training figures."""
    return _info(registry, registry.get(name), private=private)


@router.get("/{name}/profile", response_model=Profile, responses={404: ERROR_RESPONSES[404], 503: ERROR_RESPONSES[503]})
async def get_profile(name: str, registry: RegistryDep, settings: SettingsDep) -> Profile:
    """The capacity profile warm-up measured: latency and throughput per batch size, the cap, the device."""
    service = registry.get(name)
    engine = service.engine
    if engine is None:
        raise NotReady(f"model {name!r} is {service.state}")
    rows = [
        ProfileRow(
            batch_size=size,
            latency_ms=ms,
            images_per_s=round(size * 1000 / ms, 2) if ms > 0 else 0.0,
            within_cap=size <= engine.batch_cap,
        )
        for size, ms in sorted(engine.warmup_ms.items())
    ]
    peak = max((row.images_per_s for row in rows if row.within_cap), default=0.0)
    return Profile(
        model=service.name,
        version=service.version,
        device=engine.device_name,
        precision=engine.precision,
        variant=engine.variant,
        batch_cap=engine.batch_cap,
        max_batch_size=settings.max_batch_size,
        peak_images_per_s=peak,
        measured_at=service.loaded_at,
        batch_sizes=rows,
    )


CONTROL_RESPONSES: dict[int | str, dict] = {
    400: error_response("not a model name (a path, a URL), or a file resolving outside the weights directory"),
    403: error_response("model control is off (start the server with --model-control)"),
    404: error_response("no such checkpoint in the weights directory, or the model is not served"),
    409: error_response("another operation on this model is in progress, or the operation does not apply now"),
    422: error_response("the checkpoint failed to load or failed its checks; what served before still serves"),
    503: ERROR_RESPONSES[503],
}


def _enabled(settings: SettingsDep) -> None:
    if not settings.model_control:
        raise Forbidden("model control is off; start the server with --model-control")


control_router = APIRouter(
    prefix="/models",
    tags=["model control"],
    dependencies=[Depends(require_api_key), Depends(_enabled)],
    responses={401: ERROR_RESPONSES[401], **CONTROL_RESPONSES},
)


def _response(result: ControlResult) -> ControlResponse:
    return ControlResponse(
        model=result.model,
        action=result.action,
        changed=result.changed,
        version=result.version,
        previous_version=result.previous_version,
        check=result.check,
        seconds=result.seconds,
    )


@control_router.post("/{name}/load", response_model=ControlResponse)
async def load_model(name: str, control: ControlDep) -> ControlResponse:
    """Serve `WEIGHTS_DIR/{name}.safetensors` (not served yet) once it loads, warms up and passes its checks."""
    return _response(await control.load(name))


@control_router.post("/{name}/reload", response_model=ControlResponse)
async def reload_model(name: str, control: ControlDep) -> ControlResponse:
    """Hot-swap to the file's version: loaded and checked beside the serving one, then switched atomically."""
    return _response(await control.reload(name))


@control_router.post("/{name}/rollback", response_model=ControlResponse)
async def rollback_model(name: str, control: ControlDep) -> ControlResponse:
    """Serve the version that served before the last switch again."""
    return _response(await control.rollback(name))


@control_router.post("/{name}/unload", response_model=ControlResponse)
async def unload_model(name: str, control: ControlDep) -> ControlResponse:
    """Stop serving the model (not the default one); admitted requests are answered first."""
    return _response(await control.unload(name))
