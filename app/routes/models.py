"""``GET /models`` and ``GET /models/{name}``."""

from __future__ import annotations

from fastapi import APIRouter, Depends

from app.deps import RegistryDep, require_api_key
from app.errors import NotReady
from app.registry import ModelRegistry
from app.schemas import ERROR_RESPONSES, ModelInfo, ModelList
from app.service import ModelService

router = APIRouter(
    prefix="/models",
    tags=["models"],
    dependencies=[Depends(require_api_key)],
    responses={401: ERROR_RESPONSES[401]},
)


def _info(registry: ModelRegistry, service: ModelService) -> ModelInfo:
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
        metadata=engine.metadata,
    )


@router.get("", response_model=ModelList, responses={503: ERROR_RESPONSES[503]})
async def list_models(registry: RegistryDep) -> ModelList:
    """List the served models, the default one, and checkpoints that failed to load."""
    models = [_info(registry, service) for service in registry.services.values()]
    return ModelList(default=registry.default, models=models, failed=registry.failures)


@router.get("/{name}", response_model=ModelInfo, responses={404: ERROR_RESPONSES[404], 503: ERROR_RESPONSES[503]})
async def get_model(name: str, registry: RegistryDep) -> ModelInfo:
    """Describe one model: state, version, device, precision, batch cap, labels, preprocessing, training figures."""
    return _info(registry, registry.get(name))
