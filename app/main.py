"""``create_app(settings)``: assembles routers, middleware and the lifespan; nothing else."""

from __future__ import annotations

import logging
import os
import signal
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware

from app.errors import install_error_handlers
from app.metrics import Metrics
from app.middleware import RequestContextMiddleware
from app.registry import ModelRegistry
from app.routes import models, ops, predict
from app.settings import Settings

__all__ = ["create_app"]

log = logging.getLogger("app.main")

DESCRIPTION = """Classify images with ResNet checkpoints from the weights directory.

Requests to one model are batched dynamically; `/ready` says when every model is warm;
`/metrics` exposes Prometheus metrics. With `--api-key`, every route but `/health`, `/ready`
and `/metrics` needs `Authorization: Bearer <key>`.
"""


def _exit_on_fatal(reason: str) -> None:
    """Startup failed after the port opened (a model failed to warm up): stop the process."""
    os.kill(os.getpid(), signal.SIGTERM)


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Scan checkpoints (fails startup if none is usable), then load and warm them in the background."""
    registry: ModelRegistry = app.state.registry
    registry.scan()
    registry.start(on_fatal=app.state.on_fatal)
    yield
    await registry.close()


def create_app(settings: Settings | None = None) -> FastAPI:
    """A ready-to-serve ASGI app; its models load when the lifespan starts."""
    settings = settings or Settings()
    app = FastAPI(
        title="ResNet Serve",
        version="0.1.0",
        description=DESCRIPTION,
        lifespan=lifespan,
        # Metrics are Prometheus (/metrics). FastAPI's native OpenTelemetry hook would otherwise look up
        # the global providers on every request: about 7% of the event loop's time at load.
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    app.state.settings = settings
    app.state.metrics = Metrics()
    app.state.registry = ModelRegistry(settings, app.state.metrics)
    app.state.on_fatal = _exit_on_fatal
    install_error_handlers(app)
    app.include_router(predict.router)
    app.include_router(models.router)
    app.include_router(ops.router)
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "Content-Type", "X-Request-ID"],
            expose_headers=["X-Request-ID", "Retry-After"],
        )
    app.add_middleware(RequestContextMiddleware, metrics=app.state.metrics)
    return app
