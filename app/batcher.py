"""Dynamic batching: one bounded asyncio queue per model, one loop task, one forward thread.

When the model is idle, whatever is queued runs at once (no wait at low load); while a batch runs,
new requests queue up and form the next batch, up to ``max_batch_size``. ``max_wait_s`` (optional)
holds a partial batch a little longer to let it fill. The forward runs in a dedicated thread so the
event loop keeps accepting and preprocessing requests meanwhile. After a batch, each future is
resolved on its own: a result, or the error of its own batch; requests whose deadline passed or
whose client went away are dropped before the forward.

Capacity is reserved before the work that leads to a submit: ``reserve(n)`` takes ``n`` of the
``max_queue`` slots at once or none (503), so a request is refused before its images are decoded, and
a ``/predict/batch`` either gets a slot for every image or is refused whole. The batcher also keeps
what a watchdog needs: how long the current batch has been running (``stalled_s``) and how many
batches in a row have failed (``consecutive_failures``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from app import request_log
from app.errors import DeadlineExceeded, InferenceFailed, Overloaded

__all__ = ["Batcher", "Entry", "BatchStats", "Slots", "collect_batch"]

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


class Slots:
    """Slots reserved for a request (``Batcher.reserve``): each ``submit`` uses one, ``close`` frees the rest."""

    def __init__(self, batcher: Batcher[Any, Any], count: int) -> None:
        self._batcher = batcher
        self.left = count

    def __enter__(self) -> Slots:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def use(self) -> None:
        """One reserved slot becomes a queued entry."""
        if self.left <= 0:
            raise RuntimeError("no reserved slot left")
        self.left -= 1
        self._batcher._reserved -= 1

    def close(self) -> None:
        """Free the slots not used."""
        self._batcher._reserved -= self.left
        self.left = 0


class Batcher(Generic[T, R]):
    """Feeds ``predict(list[item]) -> list[result]`` with batches formed from concurrent ``submit`` calls.

    A result may be an exception: that item's request fails with it, its batch-mates do not.
    """

    def __init__(
        self,
        predict: Callable[[list[T]], Sequence[R | BaseException]],
        *,
        max_batch_size: int = 32,
        max_wait_s: float = 0.0,
        max_queue: int = 1024,
        timeout_s: float = 30.0,
        executor: Executor | None = None,
        on_batch: Callable[[BatchStats], None] | None = None,
        on_crash: Callable[[str], None] | None = None,
        on_depth: Callable[[int], None] | None = None,
        name: str = "model",
    ) -> None:
        self.predict = predict
        self.max_batch_size = max_batch_size
        self.max_wait_s = max_wait_s
        self.timeout_s = timeout_s
        self.name = name
        self.max_queue = max_queue
        self._queue: asyncio.Queue[Entry[T]] = asyncio.Queue()  # bounded by reserve(): queued + reserved
        self._reserved = 0
        self._running_since: float | None = None
        #: Batches in a row whose forward failed (0 after any batch that ran), and when the first of them failed.
        self.consecutive_failures = 0
        self.failing_since: float | None = None
        self._own_executor = executor is None
        self._executor = executor or ThreadPoolExecutor(1, thread_name_prefix=f"forward-{name}")
        self._on_batch = on_batch
        self._on_crash = on_crash
        self._on_depth = on_depth  # called with the queue depth after each request queued and batch taken
        self._task: asyncio.Task[None] | None = None

    @property
    def depth(self) -> int:
        """Requests queued and not yet in a running batch."""
        return self._queue.qsize()

    @property
    def full(self) -> bool:
        """No slot left: a request arriving now would be refused."""
        return self._queue.qsize() + self._reserved >= self.max_queue

    def reserve(self, count: int) -> Slots:
        """``count`` queue slots for one request, all or none: 503 when they are not free."""
        if self._queue.qsize() + self._reserved + count > self.max_queue:
            raise Overloaded(f"model {self.name!r} has {self.max_queue} requests queued; retry later")
        self._reserved += count
        return Slots(self, count)

    def stalled_s(self, now: float) -> float:
        """How long the batch now running (or waiting for the forward thread) has taken; 0 when none runs."""
        return 0.0 if self._running_since is None else now - self._running_since

    def start(self) -> None:
        """Start the loop task (in the running event loop)."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._loop(), name=f"batcher-{self.name}")
            self._task.add_done_callback(self._ended)

    def _ended(self, task: asyncio.Task[None]) -> None:
        """The loop only ends by ``stop()``; anything else is a bug that must not pass silently."""
        if task.cancelled() or task.exception() is None:
            return
        exc = task.exception()
        log.critical("the batch loop of model %r stopped", self.name, exc_info=exc)
        if self._on_crash is not None:
            self._on_crash(f"batch loop stopped: {type(exc).__name__}: {exc}")

    async def stop(self) -> None:
        """Stop the loop; fail what is still queued; release the forward thread."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.wait([self._task])  # ends cancelled, or had crashed already (reported by _ended)
            self._task = None
        while not self._queue.empty():
            entry = self._queue.get_nowait()
            if not entry.future.done():
                entry.future.set_exception(InferenceFailed("the service shut down before this request ran"))
        if self._own_executor:
            self._executor.shutdown(wait=False)

    async def submit(self, item: T, *, deadline: float | None = None, slots: Slots | None = None) -> R:
        """Queue ``item`` in one of ``slots`` (default: reserve one now) and wait for its result; 503 when no
        slot is free, 504 past the deadline.

        ``deadline`` is a ``time.monotonic()`` instant (default: now + ``timeout_s``). The batch size and
        the queue and inference times go to the current request's log (``app.request_log``).
        """
        loop = asyncio.get_running_loop()
        now = time.monotonic()
        deadline = now + self.timeout_s if deadline is None else deadline
        if deadline <= now:  # spent before it got here (e.g. a slow upload): no queue slot for it
            raise DeadlineExceeded(f"no result within the {self.timeout_s:g} s deadline")
        if slots is None:
            slots = self.reserve(1)
        slots.use()
        entry = Entry(item, loop.create_future(), now, deadline)
        self._queue.put_nowait(entry)
        if self._on_depth is not None:
            self._on_depth(self._queue.qsize())
        # One timer per request, not wait_for (which wraps the future in another, per request).
        timer = loop.call_later(deadline - now, self._expire, entry.future)
        try:
            return await entry.future
        finally:
            timer.cancel()
            if entry.finished_at:  # its batch ran to the end (not cut short by its deadline)
                request_log.current().record_batch(
                    entry.batch_size, entry.started_at - entry.queued_at, entry.finished_at - entry.started_at
                )

    def _expire(self, future: asyncio.Future[Any]) -> None:
        if not future.done():  # the batcher skips it from now on
            future.set_exception(DeadlineExceeded(f"no result within the {self.timeout_s:g} s deadline"))

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            entries: list[Entry[T]] = []
            try:
                await self._collect(entries)
                if self._on_depth is not None:
                    self._on_depth(self._queue.qsize())
                batch, expired = collect_batch(entries, time.monotonic())
                for entry in expired:
                    entry.future.set_exception(DeadlineExceeded(f"no result within the {self.timeout_s:g} s deadline"))
                if batch:
                    await self._run(loop, batch)
            except BaseException:  # stopped (cancelled), or a bug in this loop: nobody else will answer these
                for entry in entries:
                    if not entry.future.done():
                        entry.future.set_exception(InferenceFailed("the service shut down before this request ran"))
                raise

    async def _collect(self, entries: list[Entry[T]]) -> None:
        """Wait for a first request, take what else is queued, and with ``max_wait_s`` wait that long to fill up."""
        entries.append(await self._queue.get())
        self._take_queued(entries)
        if self.max_wait_s > 0:
            until = time.monotonic() + self.max_wait_s
            while len(entries) < self.max_batch_size and (remaining := until - time.monotonic()) > 0:
                try:
                    # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow the loop's cancellation
                    # when the get completes in the same tick, and stop() would wait forever.
                    async with asyncio.timeout(remaining):
                        entries.append(await self._queue.get())
                except TimeoutError:
                    break
                self._take_queued(entries)

    def _take_queued(self, entries: list[Entry[T]]) -> None:
        while len(entries) < self.max_batch_size and not self._queue.empty():
            entries.append(self._queue.get_nowait())

    async def _run(self, loop: asyncio.AbstractEventLoop, batch: list[Entry[T]]) -> None:
        started = time.monotonic()
        for entry in batch:
            entry.batch_size, entry.started_at = len(batch), started
        stats = BatchStats(len(batch), [started - entry.queued_at for entry in batch])
        self._running_since = started
        try:
            outputs: Sequence[Any] = await loop.run_in_executor(
                self._executor, self.predict, [entry.item for entry in batch]
            )
            if len(outputs) != len(batch):
                raise RuntimeError(f"predict returned {len(outputs)} results for {len(batch)} inputs")
            results: Sequence[Any] | None = outputs
        except asyncio.CancelledError:
            for entry in batch:
                if not entry.future.done():
                    entry.future.set_exception(InferenceFailed("the service shut down during this request's batch"))
            raise
        except Exception:
            log.exception("batch of %d for model %r failed", len(batch), self.name)
            stats.ok, results = False, None
        finally:
            self._running_since = None
        finished = time.monotonic()
        if stats.ok:
            self.consecutive_failures, self.failing_since = 0, None
        else:
            self.consecutive_failures += 1
            self.failing_since = self.failing_since or finished
        stats.inference_s = finished - started
        for i, entry in enumerate(batch):
            entry.finished_at = finished
            if entry.future.done():  # the client went away or its deadline passed meanwhile
                continue
            result = results[i] if results is not None else InferenceFailed("inference failed for this batch")
            if isinstance(result, BaseException):
                entry.future.set_exception(result)
            else:
                entry.future.set_result(result)
        if self._on_batch is not None:
            try:
                self._on_batch(stats)
            except Exception:
                log.exception("on_batch hook failed")
