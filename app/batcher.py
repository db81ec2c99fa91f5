"""Dynamic batching: one bounded queue per model, drained by that model's own forward thread.

When the model is idle, whatever is queued runs at once (no wait at low load); while a batch runs,
new requests queue up and form the next batch, up to ``max_batch_size``. ``max_wait_s`` (optional)
holds a partial batch a little longer to let it fill.

The batch loop lives in the forward thread, not on the event loop: the thread takes the next batch
from the queue the moment the previous forward returns, so the model never waits for a busy event
loop to hand it work (on a loaded 2-core machine that wait had the model idle half the time). The
event loop only queues requests and resolves their futures, once per batch, via
``call_soon_threadsafe``. Each future is resolved on its own: a result, or the error of its own
batch; requests whose deadline passed or whose client went away are dropped before the forward.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from app.errors import DeadlineExceeded, InferenceFailed, Overloaded

__all__ = ["Batcher", "Entry", "BatchStats", "collect_batch"]

log = logging.getLogger("app.batcher")

T = TypeVar("T")
R = TypeVar("R")


@dataclass
class Entry(Generic[T]):
    """One queued request: its input, its future, when it was queued and when it expires."""

    item: T
    future: asyncio.Future[Any]
    queued_at: float
    deadline: float
    batch_size: int = 0
    started_at: float = 0.0
    finished_at: float = 0.0


@dataclass
class BatchStats:
    """What one batch did, for metrics and logs."""

    size: int
    queue_waits_s: list[float] = field(default_factory=list)
    inference_s: float = 0.0
    ok: bool = True


def collect_batch(entries: Sequence[Entry[T]], now: float) -> tuple[list[Entry[T]], list[Entry[T]]]:
    """Split queued entries, in order, into those still worth running and those expired.

    Entries whose future is already done (client gone, deadline handled by the caller) are left
    out of both. Pure: it neither touches the queue nor resolves a future.
    """
    live: list[Entry[T]] = []
    expired: list[Entry[T]] = []
    for entry in entries:
        if entry.future.done():
            continue
        (expired if entry.deadline <= now else live).append(entry)
    return live, expired


class Batcher(Generic[T, R]):
    """Feeds ``predict(list[item]) -> list[result]`` with batches formed from concurrent ``submit`` calls.

    ``forward_lock``, shared between the batchers of one device, lets one forward run at a time
    (models on one CPU would otherwise fight over the same cores); ``thread_init`` runs first in
    the forward thread (e.g. to set torch's thread count there). ``on_batch`` is called from the
    forward thread after each batch.
    """

    def __init__(
        self,
        predict: Callable[[list[T]], list[R]],
        *,
        max_batch_size: int = 32,
        max_wait_s: float = 0.0,
        max_queue: int = 1024,
        timeout_s: float = 30.0,
        on_batch: Callable[[BatchStats], None] | None = None,
        forward_lock: threading.Lock | None = None,
        thread_init: Callable[[], None] | None = None,
        name: str = "model",
    ) -> None:
        self.predict = predict
        self.max_batch_size = max_batch_size
        self.max_wait_s = max_wait_s
        self.timeout_s = timeout_s
        self.name = name
        self._queue: queue.Queue[Entry[T] | None] = queue.Queue(maxsize=max_queue)
        self._max_queue = max_queue
        self._on_batch = on_batch
        self._forward_lock = forward_lock or threading.Lock()
        self._thread_init = thread_init
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._taken: list[Entry[T]] = []  # taken off the queue by the forward thread, not yet resolved
        self._stopped = False

    @property
    def depth(self) -> int:
        """Requests queued and not yet in a running batch."""
        return self._queue.qsize()

    def start(self) -> None:
        """Start the forward thread; results are delivered to the running event loop."""
        if self._thread is None:
            self._loop = asyncio.get_running_loop()
            self._thread = threading.Thread(target=self._work, name=f"forward-{self.name}", daemon=True)
            self._thread.start()

    async def stop(self) -> None:
        """Fail what is queued or running; the forward thread exits after its current batch."""
        self._stopped = True
        pending: list[Entry[T]] = list(self._taken)
        with contextlib.suppress(queue.Empty):
            while True:
                entry = self._queue.get_nowait()
                if entry is not None:
                    pending.append(entry)
        for entry in pending:
            if not entry.future.done():
                entry.future.set_exception(InferenceFailed("the service shut down before this request ran"))
        self._queue.put_nowait(None)  # wakes the thread; the queue was just emptied, so there is room
        self._thread = None

    async def submit(self, item: T, *, deadline: float | None = None, trace: dict[str, Any] | None = None) -> R:
        """Queue ``item`` and wait for its result; 503 when the queue is full, 504 past the deadline.

        ``deadline`` is a ``time.monotonic()`` instant (default: now + ``timeout_s``); ``trace``, when
        given, receives the batch size and the queue and inference milliseconds of this request.
        """
        if self._stopped:
            raise InferenceFailed("the service is shutting down")
        now = time.monotonic()
        deadline = now + self.timeout_s if deadline is None else deadline
        entry = Entry(item, asyncio.get_running_loop().create_future(), now, deadline)
        try:
            self._queue.put_nowait(entry)
        except queue.Full:
            raise Overloaded(f"model {self.name!r} has {self._max_queue} requests queued; retry later") from None
        try:
            return await asyncio.wait_for(entry.future, max(0.0, deadline - now))
        except TimeoutError:
            raise DeadlineExceeded(f"no result within the {self.timeout_s:g} s deadline") from None
        finally:
            if trace is not None and entry.batch_size:
                trace["batch_size"] = entry.batch_size
                trace["queue_ms"] = round((entry.started_at - entry.queued_at) * 1000, 3)
                trace["inference_ms"] = round((entry.finished_at - entry.started_at) * 1000, 3)

    # --- the forward thread -------------------------------------------------------------------

    def _work(self) -> None:
        if self._thread_init is not None:
            self._thread_init()
        while True:
            entries = self._take()
            if entries is None:
                return
            batch, expired = collect_batch(entries, time.monotonic())
            if expired:
                self._deliver(self._expire, expired)
            if batch:
                self._run(batch)
            self._taken = []

    def _take(self) -> list[Entry[T]] | None:
        """Block for one request, then take what else is queued (waiting up to ``max_wait_s``)."""
        first = self._queue.get()
        if first is None or self._stopped:
            return None
        entries = [first]
        self._taken = entries
        until = time.monotonic() + self.max_wait_s
        while len(entries) < self.max_batch_size:
            try:
                remaining = until - time.monotonic()
                entry = self._queue.get(timeout=remaining) if remaining > 0 else self._queue.get_nowait()
            except queue.Empty:
                break
            if entry is None:  # stop() was called; it fails what we hold
                return None
            entries.append(entry)
        return entries

    def _run(self, batch: list[Entry[T]]) -> None:
        started = time.monotonic()
        for entry in batch:
            entry.batch_size, entry.started_at = len(batch), started
        stats = BatchStats(len(batch), [started - entry.queued_at for entry in batch])
        results: list[Any] | None = None
        error: InferenceFailed | None = None
        with self._forward_lock:
            try:
                results = self.predict([entry.item for entry in batch])
                if len(results) != len(batch):
                    raise RuntimeError(f"predict returned {len(results)} results for {len(batch)} inputs")
            except Exception as exc:  # noqa: BLE001  (a failing batch fails only its own requests)
                log.exception("batch of %d for model %r failed", len(batch), self.name)
                results, stats.ok = None, False
                error = InferenceFailed(f"inference failed: {type(exc).__name__}: {exc}")
        finished = time.monotonic()
        stats.inference_s = finished - started
        for entry in batch:
            entry.finished_at = finished
        self._deliver(self._resolve, batch, results, error)
        if self._on_batch is not None:
            try:
                self._on_batch(stats)
            except Exception:  # noqa: BLE001
                log.exception("on_batch hook failed")

    def _deliver(self, callback: Callable[..., None], *args: Any) -> None:
        """Run ``callback(*args)`` on the event loop (dropped if the loop is gone: shutdown)."""
        assert self._loop is not None
        with contextlib.suppress(RuntimeError):  # the loop closed under us
            self._loop.call_soon_threadsafe(callback, *args)

    # --- back on the event loop ---------------------------------------------------------------

    def _expire(self, entries: list[Entry[T]]) -> None:
        for entry in entries:
            if not entry.future.done():
                entry.future.set_exception(DeadlineExceeded(f"no result within the {self.timeout_s:g} s deadline"))

    @staticmethod
    def _resolve(batch: list[Entry[T]], results: list[Any] | None, error: InferenceFailed | None) -> None:
        for i, entry in enumerate(batch):
            if entry.future.done():  # the client went away or its deadline passed meanwhile
                continue
            result = results[i] if results is not None else error
            if isinstance(result, BaseException):
                entry.future.set_exception(result)
            else:
                entry.future.set_result(result)
