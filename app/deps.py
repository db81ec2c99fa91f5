"""Dependencies injected into the routes (``Annotated[..., Depends(...)]`` aliases)."""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from app.errors import Unauthorized
from app.registry import ModelRegistry
from app.settings import Settings

__all__ = ["RegistryDep", "SettingsDep", "check_api_key", "presented_api_key", "require_api_key"]


async def get_registry(request: Request) -> ModelRegistry:
    """The app's model registry (async: a sync dependency would cost a thread hop per request)."""
    return request.app.state.registry


async def get_settings(request: Request) -> Settings:
    """The app's settings."""
    return request.app.state.settings


RegistryDep = Annotated[ModelRegistry, Depends(get_registry)]
SettingsDep = Annotated[Settings, Depends(get_settings)]

_bearer = HTTPBearer(auto_error=False, description="the --api-key, when one is set")


def presented_api_key(settings: Settings, authorization: str | None) -> bool:
    """Whether ``authorization`` is ``Bearer <--api-key>``; False when no key is set."""
    if settings.api_key is None:
        return False
    scheme, _, given = (authorization or "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), settings.api_key.encode())


def check_api_key(settings: Settings, authorization: str | None) -> None:
    """401 unless ``authorization`` is ``Bearer <--api-key>`` (no-op when no key is set)."""
    if settings.api_key is not None and not presented_api_key(settings, authorization):
        raise Unauthorized("missing or invalid API key (Authorization: Bearer ...)")


async def require_api_key(
    request: Request, settings: SettingsDep, _: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
) -> None:
    """``check_api_key`` as a dependency (``_bearer`` puts the scheme into the OpenAPI description)."""
    check_api_key(settings, request.headers.get("authorization"))
