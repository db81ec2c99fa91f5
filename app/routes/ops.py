"""``GET /health``, ``GET /ready`` and ``GET /metrics`` (never behind the API key)."""

from __future__ import annotations

import time

from fastapi import APIRouter, Request, Response

from app.deps import RegistryDep, SettingsDep
from app.errors import NotReady, Stalled
from app.metrics import CONTENT_TYPE_LATEST
from app.registry import ReadinessBoard
from app.schemas import ERROR_RESPONSES, Health, Readiness

router = APIRouter(tags=["ops"])


@router.get("/health", response_model=Health, responses={503: ERROR_RESPONSES[503]})
async def health(registry: RegistryDep, settings: SettingsDep) -> Health:
    """Liveness: the process answers, and no model has been stuck for over `--stall-timeout-s`: a batch that
    long, or every batch failing that long."""
    stalled = registry.stalled(time.monotonic(), settings.stall_timeout_s)
    if stalled:
        raise Stalled("stuck: " + "; ".join(f"model {name!r}: {what}" for name, what in stalled.items()))
    return Health()


@router.get("/ready", response_model=Readiness, responses={503: ERROR_RESPONSES[503]})
async def ready(request: Request, registry: RegistryDep) -> Readiness:
    """Readiness: 200 once every model is loaded and warm (in every process); 503 before that, while draining,
    and while a model's last `--max-failed-batches` batches all failed."""
    reason = registry.not_ready_reason()
    if reason is not None:
        raise NotReady(reason)
    board: ReadinessBoard | None = getattr(request.app.state, "board", None)  # set with --processes N
    waiting = board.not_ready() if board is not None else {}
    if waiting:
        raise NotReady("worker processes not ready: " + ", ".join(f"{i} ({phase})" for i, phase in waiting.items()))
    return Readiness(status="ready", models=sorted(registry.services))


@router.get(
    "/metrics",
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE_LATEST: {}}, "description": "Prometheus text format"}},
)
async def metrics(request: Request) -> Response:
    """Prometheus metrics (text exposition format)."""
    return Response(request.app.state.metrics.render(), media_type=CONTENT_TYPE_LATEST)
