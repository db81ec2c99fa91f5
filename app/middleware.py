"""Per-request bookkeeping as plain ASGI middleware: request id, metrics, one structured log line, and the
JSON 500 for an unexpected exception."""

from __future__ import annotations

import logging
import random
import re
import time

from prometheus_client import Counter, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app import request_log
from app.errors import internal_error_response
from app.metrics import Metrics

__all__ = ["RequestContextMiddleware"]

log = logging.getLogger("app.access")
error_log = logging.getLogger("app.errors")

_PROBES = ("/health", "/ready", "/metrics")  # logged at DEBUG when they succeed
_VALID_ID = re.compile(r"^[A-Za-z0-9._:/+=-]{1,128}$")


class RequestContextMiddleware:
    """Takes ``X-Request-ID`` (or makes one), returns it, counts and times the request, logs one line.

    The route, the model service and the batcher add fields to the log line through
    ``app.request_log``: model, images, batch size, preprocessing, queue and inference milliseconds.

    It is the outermost of the app's own middleware, so it also answers an exception nothing else
    handled: logged with its traceback and the request id, then a JSON 500 that carries the id too
    (Starlette's ``ServerErrorMiddleware``, outside it, would answer without the id).
    """

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics
        self._series: dict[tuple[str, int], tuple[Counter, Histogram]] = {}  # (route, status) -> bound children

    def _observe(self, path: str, status: int, seconds: float) -> None:
        """Count and time the request (children bound once per route and status: no label lookup per request)."""
        series = self._series.get((path, status))
        if series is None:
            m = self.metrics
            series = (m.requests.labels(path, str(status)), m.request_duration.labels(path))
            self._series[(path, status)] = series
        count, duration = series
        count.inc()
        duration.observe(seconds)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        request_id = _request_id(scope)
        record = request_log.begin(request_id)
        status = 500
        started_response = False
        header = (b"x-request-id", request_id.encode())

        async def send_with_id(message: Message) -> None:
            nonlocal status, started_response
            if message["type"] == "http.response.start":
                status, started_response = message["status"], True
                message["headers"] = [*message.get("headers", []), header]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception:
            error_log.exception(
                "unhandled error on %s %s", scope["method"], scope["path"], extra={"request_id": request_id}
            )
            if started_response:
                raise  # too late for a 500: the server closes the connection
            await internal_error_response()(scope, receive, send_with_id)
        finally:
            elapsed = time.perf_counter() - started
            route = scope.get("route")
            path = getattr(route, "path", "unmatched")
            self._observe(path, status, elapsed)
            level = logging.DEBUG if path in _PROBES and status < 400 else logging.INFO
            if log.isEnabledFor(level):
                log.log(
                    level,
                    "request",
                    extra={
                        "request_id": request_id,
                        "method": scope["method"],
                        "path": scope["path"],
                        "status": status,
                        "ms": round(elapsed * 1000, 3),
                        **record.fields(),
                    },
                )


def _request_id(scope: Scope) -> str:
    for name, value in scope["headers"]:
        if name == b"x-request-id":
            candidate = value.decode("latin-1")
            if _VALID_ID.match(candidate):
                return candidate
            break
    # 128 random bits as hex, like uuid4().hex, without uuid4's os.urandom syscall per request (the ids
    # need to be unique, not unpredictable); that syscall was 11% of the event loop's time at load.
    return f"{random.getrandbits(128):032x}"
