"""Per-request log fields, carried by a ``contextvars`` context from wherever they are measured.

The access middleware opens a ``RequestLog`` for each HTTP request; the route, the model service and
the batcher add to it through ``current()`` (the same asyncio task, or tasks it spawned, see the
same object); the middleware writes it into the request's one log line. For ``/predict/batch`` the
images' figures combine: preprocessing milliseconds add up, queue and inference milliseconds are the
longest image's, and every batch size is kept.
"""

from __future__ import annotations

from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

__all__ = ["RequestLog", "begin", "current"]


@dataclass
class RequestLog:
    """What one request did, beyond its method, path, status and duration."""

    request_id: str = ""
    model: str | None = None
    images: int = 0
    preprocess_s: float = 0.0
    queue_s: float = 0.0
    inference_s: float = 0.0
    batch_sizes: list[int] = field(default_factory=list)

    def record_preprocess(self, seconds: float) -> None:
        """One image decoded and resized."""
        self.images += 1
        self.preprocess_s += seconds

    def record_batch(self, size: int, queue_s: float, inference_s: float) -> None:
        """One image went through a batch of ``size``, after waiting ``queue_s`` in the queue."""
        self.batch_sizes.append(size)
        self.queue_s = max(self.queue_s, queue_s)
        self.inference_s = max(self.inference_s, inference_s)

    def fields(self) -> dict[str, Any]:
        """The log line's extra fields (only those this request produced)."""
        out: dict[str, Any] = {}
        if self.model is not None:
            out["model"] = self.model
        if self.images:
            out["images"] = self.images
            out["preprocess_ms"] = round(self.preprocess_s * 1000, 3)
        if self.batch_sizes:
            sizes = self.batch_sizes
            out["batch_size"] = sizes[0] if len(sizes) == 1 else sizes
            out["queue_ms"] = round(self.queue_s * 1000, 3)
            out["inference_ms"] = round(self.inference_s * 1000, 3)
        return out


_current: ContextVar[RequestLog | None] = ContextVar("request_log", default=None)


def begin(request_id: str = "") -> RequestLog:
    """A fresh log for the request ``request_id`` this context is serving."""
    log = RequestLog(request_id)
    _current.set(log)
    return log


def current() -> RequestLog:
    """This request's log; outside any request (unit tests, warm-up), a throwaway one."""
    log = _current.get()
    return log if log is not None else RequestLog()
