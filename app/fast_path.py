"""``FastPathMiddleware``: the prediction routes served ahead of FastAPI's router.

The service's hot path is ``POST /predict``. Behind the middleware stack, FastAPI's included-router
matching, route wrappers and exception middleware cost more per request than decoding a small image
(docs/performance.md). This middleware, the innermost one, answers an exact ``(method, path)`` match of
a ``ServingRoute`` itself, with the route's own handler, and renders an exception with the app's own
handlers (``app.errors``), so the route behaves exactly as through the router; every other request
goes on to the router. The routes stay declared on the app, which is what ``/docs`` describes.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from app.routes.predict import ServingRoute

__all__ = ["FastPathMiddleware"]

#: As Starlette keeps them in ``app.exception_handlers`` (the app's are all async).
ExceptionHandler = Callable[[Request, Any], Response | Awaitable[Response]]


class FastPathMiddleware:
    """Serves ``routes`` (by exact method and path) without the router; everything else passes through."""

    def __init__(
        self, app: ASGIApp, routes: list[ServingRoute], exception_handlers: Mapping[Any, ExceptionHandler]
    ) -> None:
        self.app = app
        self.handlers = {
            (method, route.path): (route, route.get_route_handler())
            for route in routes
            for method in route.methods or ()
        }
        self.exception_handlers = exception_handlers

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or (match := self.handlers.get((scope["method"], scope["path"]))) is None:
            await self.app(scope, receive, send)
            return
        route, handle = match
        scope["route"] = route  # for the access log and the metrics' route label, as the router sets it
        request = Request(scope, receive, send)
        try:
            response = await handle(request)
        except Exception as exc:
            handler = self._handler_for(exc)
            if handler is None:
                raise
            answer = handler(request, exc)
            response = await answer if inspect.isawaitable(answer) else answer
        await response(scope, receive, send)

    def _handler_for(self, exc: Exception) -> ExceptionHandler | None:
        """The app's handler for the most specific class of ``exc`` (Starlette's rule)."""
        for cls in type(exc).__mro__:
            if cls in self.exception_handlers:
                return self.exception_handlers[cls]
        return None
