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
    "CheckpointStatus",
    "Refusal",
    "ControlResponse",
    "Profile",
    "ProfileRow",
    "Health",
    "Readiness",
    "ErrorResponse",
    "ERROR_RESPONSES",
    "error_response",
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
    version: str | None = Field(None, description="the version that answered: its checkpoint's content hash")
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


class Refusal(BaseModel):
    """The last candidate version of a model that was refused; the version serving before kept serving."""

    version: str | None = Field(description="the refused file's content hash (null: it did not load)")
    check: str = Field(description="the check that failed: load, metadata or golden")
    reason: str
    at: datetime


class CheckpointStatus(BaseModel):
    """One checkpoint of the weights directory (or a model still served whose file is gone)."""

    name: str
    state: str = Field(description="loading, ready, draining, failed or unloaded (a file not served)")
    default: bool
    version: str | None = Field(description="content hash of the version serving (null when none serves)")
    loaded_at: datetime | None
    accuracy: float | None = Field(description="test accuracy recorded in the checkpoint by its training")
    batch_cap: int | None
    operation: str | None = Field(None, description="model control operation in progress: load, reload, ...")
    previous_version: str | None = Field(None, description="the version kept for POST /models/{name}/rollback")
    check: str | None = Field(None, description="what the serving version's check found (model control loads)")
    refusal: Refusal | None = Field(None, description="the last refused candidate, if any since the last switch")
    reason: str | None = Field(None, description="why it failed (the log's words only with the API key)")


class ModelList(BaseModel):
    """Every served model, the default, checkpoints that failed to load (name -> a fixed message; the
    reason is in the server log), and every checkpoint of the weights directory with its state."""

    default: str | None
    models: list[ModelInfo]
    failed: dict[str, str] = Field(default_factory=dict)
    checkpoints: list[CheckpointStatus] = Field(default_factory=list)


class ControlResponse(BaseModel):
    """What a model control operation did."""

    model: str
    action: str = Field(description="load, swap, rollback or unload (reload of a model not served: load)")
    changed: bool = Field(description="false when reload found the version already serving")
    version: str | None = Field(description="the version serving now (null after unload)")
    previous_version: str | None = Field(description="the version it replaced (kept for rollback)")
    check: str | None = Field(description="what the new version's check found")
    seconds: float = Field(description="load, warm-up, check and switch")


class ProfileRow(BaseModel):
    """One batch size, as measured at warm-up."""

    batch_size: int
    latency_ms: float = Field(description="one forward of this many images")
    images_per_s: float = Field(description="back-to-back forwards of this size")
    within_cap: bool = Field(description="the batcher forms batches this large (<= batch_cap)")


class Profile(BaseModel):
    """A model's capacity profile: what sizing replicas and autoscaling start from."""

    model: str
    version: str | None
    device: str
    precision: str
    variant: str
    batch_cap: int = Field(description="largest batch the batcher forms")
    max_batch_size: int = Field(description="--max-batch-size")
    peak_images_per_s: float = Field(description="the best throughput within the cap: one replica's ceiling")
    measured_at: datetime | None = Field(description="when warm-up measured it (this version's load)")
    batch_sizes: list[ProfileRow]


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


def error_response(description: str) -> dict:
    return {"model": ErrorResponse, "description": description}


ERROR_RESPONSES: dict[int | str, dict] = {
    400: error_response(
        "undecodable, truncated or oversized image, a decompression bomb, or a malformed multipart body"
    ),
    401: error_response("missing or wrong API key (only when --api-key is set)"),
    404: error_response("unknown model"),
    408: error_response(
        "the body did not arrive at --min-upload-rate-kb or within --timeout-s; the connection is closed"
    ),
    413: error_response("body larger than --max-upload-mb, or images that decode to more than --max-request-pixels"),
    415: error_response("content type is neither multipart/form-data nor image/*"),
    422: error_response("invalid query parameters (e.g. top_k < 1)"),
    500: error_response("the forward pass of this request's batch failed"),
    503: error_response(
        "not ready yet, the model's queue is full, or the server holds its budget of bodies (Retry-After)"
    ),
    504: error_response("no result within --timeout-s"),
}
