"""Dependencies injected into the routes (``Annotated[..., Depends(...)]`` aliases)."""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, Query, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from app.errors import Unauthorized
from app.registry import ModelRegistry
from app.settings import Settings

__all__ = ["RegistryDep", "SettingsDep", "ModelQuery", "TopKQuery", "require_api_key"]


async def get_registry(request: Request) -> ModelRegistry:
    """The app's model registry (async: a sync dependency would cost a thread hop per request)."""
    return request.app.state.registry


async def get_settings(request: Request) -> Settings:
    """The app's settings."""
    return request.app.state.settings


RegistryDep = Annotated[ModelRegistry, Depends(get_registry)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
ModelQuery = Annotated[str | None, Query(description="model name (see /models); default: the default model")]
TopKQuery = Annotated[int, Query(ge=1, le=1000, description="number of classes to return, best first")]

_bearer = HTTPBearer(auto_error=False, description="the --api-key, when one is set")


async def require_api_key(
    settings: SettingsDep, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
) -> None:
    """401 unless ``Authorization: Bearer <--api-key>`` (no-op when no key is set)."""
    if settings.api_key is None:
        return
    given = credentials.credentials if credentials is not None else ""
    if not hmac.compare_digest(given.encode(), settings.api_key.encode()):
        raise Unauthorized("missing or invalid API key (Authorization: Bearer ...)")
