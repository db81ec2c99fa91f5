"""The service's exceptions: each carries its HTTP status, and becomes JSON ``{"detail": ...}``
(under ``/v2``, the Open Inference Protocol's ``{"error": ...}``).

A detail is what the client sees, so it never carries an internal exception's text or a file path:
those go to the log. An unexpected exception becomes ``internal_error_response()`` in
``app.middleware``, which has the request id for the log and the response.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exception_handlers import request_validation_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.requests import ClientDisconnect

from app import request_log

log = logging.getLogger("app.errors")

__all__ = [
    "ServeError",
    "InvalidImage",
    "UnknownModel",
    "Forbidden",
    "Conflict",
    "CandidateRefused",
    "PayloadTooLarge",
    "DecodeBudgetExceeded",
    "BodyTimeout",
    "BytesBudgetExhausted",
    "UnsupportedMediaType",
    "BadRequest",
    "Unauthorized",
    "NotReady",
    "Overloaded",
    "Stalled",
    "DeadlineExceeded",
    "InferenceFailed",
    "install_error_handlers",
    "internal_error_response",
]


class ServeError(Exception):
    """Base class: ``status`` is the HTTP status, the message the ``detail``; ``reason`` labels
    ``resnet_serve_rejected_total`` (``None``: not a rejection, e.g. a failed forward)."""

    status: int = 500
    headers: dict[str, str] | None = None
    reason: str | None = None

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class BadRequest(ServeError):
    """The request is malformed (e.g. multipart without the ``file`` field)."""

    status = 400
    reason = "bad_request"


class InvalidImage(BadRequest):
    """The bytes are not a decodable image, are truncated, or are too large once decoded."""

    reason = "bad_image"


class Unauthorized(ServeError):
    """Missing or wrong API key."""

    status = 401
    headers = {"WWW-Authenticate": "Bearer"}
    reason = "unauthorized"


class UnknownModel(ServeError):
    """No model of that name is loaded."""

    status = 404


class Forbidden(ServeError):
    """The operation is switched off (e.g. model control without ``--model-control``)."""

    status = 403


class Conflict(ServeError):
    """The operation cannot run in the model's present state (another one in progress, the default model, ...)."""

    status = 409


class CandidateRefused(ServeError):
    """A checkpoint offered for serving failed to load or failed its checks; what served before still serves.

    ``check`` names the check that failed (``load``, ``metadata``, ``golden``): the label of
    ``resnet_serve_model_refusals_total``. The detail is the service's own words, never an exception's text.
    """

    status = 422

    def __init__(self, detail: str, *, check: str) -> None:
        super().__init__(detail)
        self.check = check


class PayloadTooLarge(ServeError):
    """The request body exceeds ``--max-upload-mb``."""

    status = 413
    reason = "too_large"


class DecodeBudgetExceeded(PayloadTooLarge):
    """The images of one request would decode to more pixels than ``--max-request-pixels``."""


class BodyTimeout(ServeError):
    """The client sent its body slower than ``--min-upload-rate-kb`` or not within the deadline; the
    connection is closed after this answer."""

    status = 408
    headers = {"Connection": "close"}
    reason = "body_timeout"


class UnsupportedMediaType(ServeError):
    """The body is neither multipart nor ``image/*``."""

    status = 415
    reason = "bad_request"


class InferenceFailed(ServeError):
    """The forward pass of the batch this request was in failed.

    Its detail may hold the failure's own text (the batcher's); clients get ``PUBLIC_DETAIL`` instead.
    """

    status = 500
    PUBLIC_DETAIL = "inference failed for this request's batch; the server log has the reason"


class NotReady(ServeError):
    """Models are still loading or warming up, or the service is draining."""

    status = 503
    headers = {"Retry-After": "1"}


class Stalled(ServeError):
    """Liveness: a model's batch has been running far longer than any should (a hung forward)."""

    status = 503


class Overloaded(ServeError):
    """The model's queue is full."""

    status = 503
    headers = {"Retry-After": "1"}
    reason = "queue_full"


class BytesBudgetExhausted(Overloaded):
    """The request bodies in flight already hold ``--max-body-bytes-in-flight-mb``; refused before reading."""

    headers = {"Retry-After": "1", "Connection": "close"}
    reason = "bytes_budget"


class DeadlineExceeded(ServeError):
    """The request did not get its result within ``--timeout-s``."""

    status = 504
    reason = "deadline"


def _count_rejection(request: Request, reason: str) -> None:
    """``resnet_serve_rejected_total{reason}`` += 1, in an app with metrics (``app.state.metrics``)."""
    metrics = getattr(request.app.state, "metrics", None)
    if metrics is not None:
        metrics.reject(reason)


def _error_body(request: Request, detail: str) -> dict[str, str]:
    """``{"detail": ...}``; on the v2 protocol's routes (``/v2...``), its ``{"error": ...}``."""
    path: str = request.scope["path"]
    return {"error": detail} if path == "/v2" or path.startswith("/v2/") else {"detail": detail}


async def _serve_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ServeError)
    if exc.reason is not None:
        _count_rejection(request, exc.reason)
    return JSONResponse(_error_body(request, exc.detail), status_code=exc.status, headers=exc.headers)


async def _inference_failed(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, InferenceFailed)
    log.error("inference failed: %s", exc.detail, extra={"request_id": request_log.current().request_id})
    return JSONResponse(_error_body(request, InferenceFailed.PUBLIC_DETAIL), status_code=exc.status)


#: Status recorded (metrics, access log) when the client hung up before its request was read; nginx's 499.
CLIENT_CLOSED_REQUEST = 499


async def _client_disconnected(request: Request, exc: Exception) -> Response:
    _count_rejection(request, "disconnected")
    log.debug("client disconnected before %s %s was read", request.method, request.url.path)
    return Response(status_code=CLIENT_CLOSED_REQUEST)  # nobody reads it; it only labels the metrics


async def _invalid_parameters(request: Request, exc: Exception) -> JSONResponse:
    """FastAPI's own 422, counted as ``bad_request``."""
    assert isinstance(exc, RequestValidationError)
    _count_rejection(request, "bad_request")
    return await request_validation_exception_handler(request, exc)


def internal_error_response() -> JSONResponse:
    """The answer to an unexpected exception: a fixed detail, the exception itself only in the log."""
    return JSONResponse({"detail": "internal server error"}, status_code=500)


def install_error_handlers(app: FastAPI) -> None:
    """Map every ``ServeError`` to its status and a JSON detail and a client that hung up mid-body to 499.

    Anything else propagates to ``RequestContextMiddleware``, which logs it and answers a JSON 500.
    """
    app.add_exception_handler(ServeError, _serve_error)
    app.add_exception_handler(InferenceFailed, _inference_failed)
    app.add_exception_handler(ClientDisconnect, _client_disconnected)
    app.add_exception_handler(RequestValidationError, _invalid_parameters)
