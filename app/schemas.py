"""Request and response models: the contract ``/docs`` shows."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field

from models import CheckpointMetadata

__all__ = [
    "PredictQuery",
    "Prediction",
    "PredictResponse",
    "BatchPredictResponse",
    "ModelInfo",
    "ModelList",
    "Health",
    "Readiness",
    "ErrorResponse",
    "ERROR_RESPONSES",
]


class PredictQuery(BaseModel):
    """The query parameters of ``/predict`` and ``/predict/batch``."""

    model: str | None = Field(None, description="model name (see /models); default: the default model")
    top_k: int = Field(5, ge=1, le=1000, description="number of classes to return, best first")


class Prediction(BaseModel):
    """One class and its softmax probability."""

    label: str = Field(description="class name from the checkpoint's labels")
    index: int = Field(description="class index in the model's output")
    score: float = Field(description="softmax probability, 0..1")


class PredictResponse(BaseModel):
    """The top-k classes of one image, best first."""

    model: str = Field(description="the model that answered")
    predictions: list[Prediction]


class BatchPredictResponse(BaseModel):
    """One ``/predict``-shaped result per uploaded image, in upload order."""

    results: list[PredictResponse]


class ModelInfo(BaseModel):
    """A served model: how it runs here, and its checkpoint metadata."""

    name: str
    default: bool = Field(description="used when a request names no model")
    state: str = Field(description="loading, ready, draining, stopped or failed")
    version: str | None = Field(description="content hash of the checkpoint file (SHA-256, first 16 hex digits)")
    loaded_at: datetime | None = Field(description="when this version finished loading and warming up (UTC)")
    device: str
    precision: str
    batch_cap: int = Field(description="largest batch the batcher forms (chosen at warm-up, <= --max-batch-size)")
    warmup_ms: dict[int, float] = Field(description="forward time per batch size measured at warm-up")
    variant: str = Field(description="how the model runs: eager, eager-bf16, openvino, openvino-int8, ...")
    optimization: dict[str, Any] | None = Field(
        description="--optimize's report: the chosen variant and why, each variant tried with its top-1 agreement "
        "with fp32 on the golden images, top-5 overlap, largest probability difference, images/s per batch size, "
        "speed-up over eager fp32 and build time; whether it came from the cache (null: --optimize off)"
    )
    metadata: CheckpointMetadata
    redacted: list[str] = Field(
        default_factory=list,
        description="keys withheld (blanked) because the request did not present the --api-key: the training "
        "command line and arguments, which name paths on the training machine",
    )


class ModelList(BaseModel):
    """Every served model, the default, and checkpoints that failed to load (name -> a fixed message; the
    reason is in the server log)."""

    default: str | None
    models: list[ModelInfo]
    failed: dict[str, str] = Field(default_factory=dict)


class Health(BaseModel):
    """Liveness."""

    status: str = "ok"


class Readiness(BaseModel):
    """Readiness: every model loaded and warm."""

    status: str
    models: list[str]


class ErrorResponse(BaseModel):
    """Every error: a human-readable reason (for 422, FastAPI's list of invalid parameters)."""

    detail: str | list[dict[str, Any]]


def _error(description: str) -> dict:
    return {"model": ErrorResponse, "description": description}


ERROR_RESPONSES: dict[int | str, dict] = {
    400: _error("undecodable, truncated or oversized image, a decompression bomb, or a malformed multipart body"),
    401: _error("missing or wrong API key (only when --api-key is set)"),
    404: _error("unknown model"),
    408: _error("the body did not arrive at --min-upload-rate-kb or within --timeout-s; the connection is closed"),
    413: _error("body larger than --max-upload-mb, or images that decode to more than --max-request-pixels"),
    415: _error("content type is neither multipart/form-data nor image/*"),
    422: _error("invalid query parameters (e.g. top_k < 1)"),
    500: _error("the forward pass of this request's batch failed"),
    503: _error("not ready yet, the model's queue is full, or the server holds its budget of bodies (Retry-After)"),
    504: _error("no result within --timeout-s"),
}
