"""The client's exceptions: an error answer from the server, or no answer at all."""

from __future__ import annotations

from typing import Any

__all__ = ["ClientError", "ServerError", "TransportError", "Unreachable"]


class ClientError(Exception):
    """Base class of everything the client raises."""


class ServerError(ClientError):
    """The server answered an error: ``status`` and its JSON ``detail`` (FastAPI's 422 list flattened to text)."""

    def __init__(self, status: int, detail: str, retry_after: float | None = None) -> None:
        super().__init__(f"{status} {detail}")
        self.status = status
        self.detail = detail
        self.retry_after = retry_after

    @staticmethod
    def detail_of(body: Any, fallback: str) -> str:
        """The text of an error body's ``detail`` (``fallback`` when the body has none)."""
        detail = body.get("detail") if isinstance(body, dict) else None
        if isinstance(detail, str):
            return detail
        if isinstance(detail, list):  # FastAPI's 422: [{"loc": [...], "msg": ...}, ...]
            parts = []
            for error in detail:
                if isinstance(error, dict):
                    where = ".".join(str(p) for p in error.get("loc", ()))
                    parts.append(f"{where}: {error.get('msg', error)}" if where else str(error.get("msg", error)))
                else:
                    parts.append(str(error))
            return "; ".join(parts)
        return fallback


class TransportError(ClientError):
    """No answer: the connection failed, broke, or timed out (the ``httpx`` exception is the ``__cause__``)."""


class Unreachable(TransportError):
    """The server could not be connected to (after the retries)."""
