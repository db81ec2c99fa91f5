"""Admission control for request bodies: a byte budget, and the pace a body must arrive at.

``ByteBudget`` bounds the bytes of request bodies one process holds at once
(``--max-body-bytes-in-flight-mb``). A request leases its declared Content-Length before a byte of its
body is read, and a body of undeclared length grows its lease chunk by chunk; when the budget cannot
cover it, the request gets 503 + Retry-After at once. Bytes go back to the budget as soon as the image
they carried is decoded (``ModelService``), and whatever is left when the request ends.

``UploadPace`` is when the next byte of a body must have arrived: the whole body within the request's
deadline, and after ``--upload-grace-s`` at least ``--min-upload-rate-kb`` on average, so a client that
stalls or drips its upload is cut off (408, connection closed) and its bytes released, instead of
pinning memory and a connection for as long as it likes.

Everything here runs on the event loop: no locks.
"""

from __future__ import annotations

from dataclasses import dataclass

from app.errors import BytesBudgetExhausted

__all__ = ["BodyLease", "ByteBudget", "UploadPace"]


class ByteBudget:
    """The request-body bytes one process may hold at once."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.in_use = 0

    def lease(self, declared: int | None) -> BodyLease:
        """A lease for one request's body: its declared length at once (503 when that does not fit), or 0."""
        lease = BodyLease(self)
        if declared:
            lease.grow(declared)
        return lease

    def _take(self, size: int) -> None:
        if self.in_use + size > self.capacity:
            raise BytesBudgetExhausted(
                f"the server holds {self.in_use} bytes of request bodies and cannot take {size} more; retry later"
            )
        self.in_use += size


class BodyLease:
    """The budget bytes held for one request's body; ``close()`` returns the rest (``BodyReader`` does, at its end)."""

    def __init__(self, budget: ByteBudget) -> None:
        self._budget = budget
        self.size = 0

    def grow(self, size: int) -> None:
        """Hold ``size`` more bytes (503 when the budget cannot cover them)."""
        self._budget._take(size)
        self.size += size

    def cover(self, received: int) -> None:
        """Make sure ``received`` bytes are held: a body longer than declared, or of undeclared length."""
        if received > self.size:
            self.grow(received - self.size)

    def release(self, size: int) -> None:
        """Give ``size`` bytes back (an image decoded: its bytes are no longer referenced)."""
        size = min(size, self.size)
        self.size -= size
        self._budget.in_use -= size

    def close(self) -> None:
        """Give back everything still held."""
        self.release(self.size)


@dataclass(slots=True)
class UploadPace:
    """By when a body's next bytes must have arrived (``time.monotonic()`` instants)."""

    started: float
    deadline: float
    grace_s: float
    min_rate: float  # bytes per second; 0: only the deadline

    def next_by(self, received: int) -> float:
        """The instant by which the byte after the first ``received`` must have arrived."""
        if self.min_rate <= 0:
            return self.deadline
        return min(self.deadline, self.started + self.grace_s + (received + 1) / self.min_rate)
