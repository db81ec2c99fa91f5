"""``GET /models`` and ``GET /models/{name}``."""

from __future__ import annotations

from fastapi import APIRouter, Depends

from app.deps import RegistryDep, require_api_key
from app.registry import ModelRegistry, ServedModel
from app.schemas import ERROR_RESPONSES, ModelInfo, ModelList

router = APIRouter(prefix="/models", tags=["models"], dependencies=[Depends(require_api_key)])


def _info(registry: ModelRegistry, served: ServedModel) -> ModelInfo:
    engine = served.engine
    return ModelInfo(
        name=served.name,
        default=served.name == registry.default,
        device=str(engine.device),
        precision=engine.precision,
        batch_cap=engine.batch_cap,
        warmup_ms=engine.warmup_ms,
        metadata=engine.metadata,
    )


@router.get("", response_model=ModelList)
async def list_models(registry: RegistryDep) -> ModelList:
    """List the served models, the default one, and checkpoints that failed to load."""
    models = [_info(registry, served) for served in registry.models.values()]
    return ModelList(default=registry.default, models=models, failed=registry.failures)


@router.get("/{name}", response_model=ModelInfo, responses={404: ERROR_RESPONSES[404], 503: ERROR_RESPONSES[503]})
async def get_model(name: str, registry: RegistryDep) -> ModelInfo:
    """Describe one model: device, precision, batch cap, labels, preprocessing, training figures."""
    return _info(registry, registry.get(name))
