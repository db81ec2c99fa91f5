"""The service's exceptions: each carries its HTTP status, and becomes JSON ``{"detail": ...}``."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from starlette.requests import ClientDisconnect

log = logging.getLogger("app.errors")

__all__ = [
    "ServeError",
    "InvalidImage",
    "UnknownModel",
    "PayloadTooLarge",
    "UnsupportedMediaType",
    "BadRequest",
    "Unauthorized",
    "NotReady",
    "Overloaded",
    "DeadlineExceeded",
    "InferenceFailed",
    "install_error_handlers",
]


class ServeError(Exception):
    """Base class: ``status`` is the HTTP status, the message the ``detail``."""

    status: int = 500
    headers: dict[str, str] | None = None

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class BadRequest(ServeError):
    """The request is malformed (e.g. multipart without the ``file`` field)."""

    status = 400


class InvalidImage(BadRequest):
    """The bytes are not a decodable image, are truncated, or are too large once decoded."""


class Unauthorized(ServeError):
    """Missing or wrong API key."""

    status = 401
    headers = {"WWW-Authenticate": "Bearer"}


class UnknownModel(ServeError):
    """No model of that name is loaded."""

    status = 404


class PayloadTooLarge(ServeError):
    """The request body exceeds ``--max-upload-mb``."""

    status = 413


class UnsupportedMediaType(ServeError):
    """The body is neither multipart nor ``image/*``."""

    status = 415


class InferenceFailed(ServeError):
    """The forward pass of the batch this request was in failed."""

    status = 500


class NotReady(ServeError):
    """Models are still loading or warming up, or the service is draining."""

    status = 503
    headers = {"Retry-After": "1"}


class Overloaded(ServeError):
    """The model's queue is full."""

    status = 503
    headers = {"Retry-After": "1"}


class DeadlineExceeded(ServeError):
    """The request did not get its result within ``--timeout-s``."""

    status = 504


async def _serve_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ServeError)
    return JSONResponse({"detail": exc.detail}, status_code=exc.status, headers=exc.headers)


#: Status recorded (metrics, access log) when the client hung up before its request was read; nginx's 499.
CLIENT_CLOSED_REQUEST = 499


async def _client_disconnected(request: Request, exc: Exception) -> Response:
    log.debug("client disconnected before %s %s was read", request.method, request.url.path)
    return Response(status_code=CLIENT_CLOSED_REQUEST)  # nobody reads it; it only labels the metrics


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return JSONResponse({"detail": "internal server error"}, status_code=500)


def install_error_handlers(app: FastAPI) -> None:
    """Map every ``ServeError`` to its status and a JSON detail, a client that hung up mid-body to 499,
    anything else to a logged JSON 500."""
    app.add_exception_handler(ServeError, _serve_error)
    app.add_exception_handler(ClientDisconnect, _client_disconnected)
    app.add_exception_handler(Exception, _unexpected)
