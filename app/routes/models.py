"""``GET /models`` and ``GET /models/{name}``."""

from __future__ import annotations

from dataclasses import replace
from typing import Annotated

from fastapi import APIRouter, Depends, Request

from app.deps import RegistryDep, SettingsDep, presented_api_key, require_api_key
from app.errors import NotReady
from app.registry import LOAD_FAILED, ModelRegistry
from app.schemas import ERROR_RESPONSES, ModelInfo, ModelList
from app.service import ModelService
from models import CheckpointMetadata

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


@router.get("", response_model=ModelList, responses={503: ERROR_RESPONSES[503]})
async def list_models(registry: RegistryDep, private: ShowsPrivateDep) -> ModelList:
    """List the served models, the default one, and checkpoints that failed to load."""
    models = [_info(registry, service, private=private) for service in registry.services.values()]
    failed = dict.fromkeys(registry.failures, LOAD_FAILED)  # the reasons are in the log, not for clients
    return ModelList(default=registry.default, models=models, failed=failed)


@router.get("/{name}", response_model=ModelInfo, responses={404: ERROR_RESPONSES[404], 503: ERROR_RESPONSES[503]})
async def get_model(name: str, registry: RegistryDep, private: ShowsPrivateDep) -> ModelInfo:
    """Describe one model: state, version, device, precision, batch cap, labels, preprocessing, training figures."""
    return _info(registry, registry.get(name), private=private)
