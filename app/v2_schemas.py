"""The Open Inference Protocol's (KServe v2) JSON documents, as the OpenAPI description shows them."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

__all__ = ["V2_ERROR_RESPONSES", "V2Error", "V2InferResponse", "V2ModelMetadata", "V2ServerMetadata", "V2Tensor"]


class V2Error(BaseModel):
    """Every v2 error: the protocol's ``{"error": ...}``, with the native API's statuses."""

    error: str


class V2ServerMetadata(BaseModel):
    """``GET /v2``."""

    name: str
    version: str
    extensions: list[str]


class V2TensorMetadata(BaseModel):
    """An input or output: name, datatype and shape (-1: any number of images)."""

    name: str
    datatype: str
    shape: list[int]


class V2ModelMetadata(BaseModel):
    """``GET /v2/models/{model_name}``."""

    name: str
    versions: list[str]
    platform: str
    inputs: list[V2TensorMetadata]
    outputs: list[V2TensorMetadata]


class V2Tensor(BaseModel):
    """An output tensor: ``data`` in JSON, or ``parameters.binary_data_size`` bytes after the JSON header."""

    name: str
    datatype: str
    shape: list[int]
    parameters: dict[str, Any] | None = None
    data: list[Any] | None = None


class V2InferResponse(BaseModel):
    """``POST /v2/models/{model_name}/infer`` (with binary outputs: this JSON, then the tensors' bytes)."""

    model_name: str
    model_version: str
    id: str | None = Field(None, description="the request's id, when it had one")
    outputs: list[V2Tensor]


def _error(description: str) -> dict:
    return {"model": V2Error, "description": description}


V2_ERROR_RESPONSES: dict[int | str, dict] = {
    400: _error("a malformed request: JSON, tensor names, datatypes, shapes or data; an undecodable image"),
    401: _error("missing or wrong API key (only when --api-key is set)"),
    404: _error("unknown model or version"),
    408: _error("the body did not arrive at --min-upload-rate-kb or within --timeout-s; the connection is closed"),
    413: _error("body larger than --max-upload-mb, or images that decode to more than --max-request-pixels"),
    500: _error("the forward pass of this request's batch failed"),
    503: _error("not ready yet, the model's queue is full, or the server holds its budget of bodies (Retry-After)"),
    504: _error("no result within --timeout-s"),
}
