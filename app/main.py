"""``create_app(settings, on_fatal=..., on_ready=...)``: routers, middleware and the lifespan; nothing else.

The lifespan resolves the device, scans the weights directory (a startup failure stops the process
before the port opens), then loads and warms the models in the background while ``/health`` already
answers and ``/ready`` says 503.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware

from app import __version__
from app.admission import ByteBudget
from app.devices import resolve_serving_device
from app.errors import install_error_handlers
from app.executors import Executors
from app.fast_path import FastPathMiddleware
from app.loader import ModelLoader
from app.metrics import Metrics
from app.middleware import RequestContextMiddleware
from app.model_control import ModelControl
from app.registry import ModelRegistry, StartupError
from app.routes import models, ops, page, predict, v2
from app.routes.predict import ServingRoute
from app.settings import Settings
from app.weights_watch import WeightsWatcher

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


async def _watch_after_startup(loading: asyncio.Task[None], control: ModelControl, debounce_s: float) -> None:
    """``--watch-weights``: follow the weights directory once startup has loaded every model."""
    with contextlib.suppress(Exception):
        await asyncio.shield(loading)
    if control.registry.state == "ready":
        await WeightsWatcher(control, debounce_s=debounce_s).run()


def create_app(
    settings: Settings | None = None,
    *,
    on_fatal: Callable[[str], None] = _exit_on_fatal,
    on_ready: Callable[[], None] = lambda: None,
) -> FastAPI:
    """A ready-to-serve ASGI app; its models load when the lifespan starts.

    ``on_fatal(reason)`` runs when startup fails after the port opened (default: SIGTERM to this
    process); ``on_ready()`` once every model is warm (``resnet-serve`` freezes its startup objects).
    """
    settings = settings or Settings()
    metrics = Metrics()
    registry = ModelRegistry(settings.weights_dir, default_model=settings.default_model, strict=settings.strict)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        try:
            device = resolve_serving_device(settings)
            registry.scan()
        except (ValueError, StartupError) as exc:  # a bad --device; no usable checkpoint; --strict and a broken one
            registry.mark_failed(str(exc))  # the one clear log line: "startup failed: <reason>"
            raise StartupError(str(exc)) from None
        executors = Executors.create(workers=settings.workers, torch_threads=settings.torch_threads)
        loader = ModelLoader(settings, device, executors, metrics)
        control = ModelControl(registry, loader, metrics)
        app.state.control = control
        loading = asyncio.create_task(loader.load_all(registry, on_fatal=on_fatal, on_ready=on_ready))
        tasks = [loading]
        if settings.watch_weights:
            tasks.append(asyncio.create_task(_watch_after_startup(loading, control, settings.watch_debounce_s)))
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await control.close()
            for service in registry.services.values():
                await service.stop()
            executors.shutdown()

    app = FastAPI(
        title="ResNet Serve",
        version=__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
        # Metrics are Prometheus (/metrics). FastAPI's native OpenTelemetry hook would otherwise look up
        # the global providers on every request: about 7% of the event loop's time at load.
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    app.state.settings = settings
    app.state.metrics = metrics
    app.state.registry = registry
    app.state.byte_budget = ByteBudget(settings.body_budget_bytes)
    install_error_handlers(app)
    app.include_router(predict.router)
    app.include_router(models.router)
    app.include_router(models.control_router)
    app.include_router(ops.router)
    app.include_router(page.router)
    app.include_router(v2.router)
    serving_routes = [route for route in predict.router.routes if isinstance(route, ServingRoute)]
    app.add_middleware(FastPathMiddleware, routes=serving_routes, exception_handlers=app.exception_handlers)
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "Content-Type", "X-Request-ID"],
            expose_headers=["X-Request-ID", "Retry-After"],
        )
    app.add_middleware(RequestContextMiddleware, metrics=metrics)
    return app
