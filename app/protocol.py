"""``header_timeout_protocol``: uvicorn's HTTP protocol with a deadline for a request's headers.

uvicorn closes a keep-alive connection idle for ``timeout_keep_alive``, but it stops that timer at
the first byte of a new request, and a fresh connection has no timer at all: a client that connects
and sends nothing, or drips its headers a byte at a time (slowloris), holds a connection, and a slot
of ``--max-connections``, for as long as it likes. This protocol gives each request's headers
``--header-timeout-s`` from the moment the connection opens or the previous response completes;
when they are not complete by then, the connection is closed. Once the headers are in, the body is
paced by ``app.admission.UploadPace``.
"""

from __future__ import annotations

import asyncio

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

__all__ = ["header_timeout_protocol"]


class _HeaderTimeoutProtocol(HttpToolsProtocol):
    """``HttpToolsProtocol``, closing the connection when a request's headers take over ``header_timeout_s``."""

    header_timeout_s: float = 10.0
    _header_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_header_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_header_timer()
        super().connection_lost(exc)

    def on_headers_complete(self) -> None:
        self._disarm_header_timer()
        super().on_headers_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.pipeline and not self.transport.is_closing():  # a pipelined request has its headers
            self._arm_header_timer()

    def _arm_header_timer(self) -> None:
        self._disarm_header_timer()
        self._header_timer = self.loop.call_later(self.header_timeout_s, self._headers_too_late)

    def _disarm_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _headers_too_late(self) -> None:
        self._header_timer = None
        if not self.transport.is_closing():
            self.transport.close()


def header_timeout_protocol(header_timeout_s: float) -> type[HttpToolsProtocol]:
    """The protocol class to pass as uvicorn's ``http``, with this header deadline."""
    return type("HeaderTimeoutProtocol", (_HeaderTimeoutProtocol,), {"header_timeout_s": header_timeout_s})
