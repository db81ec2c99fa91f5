"""app.batcher with a plain callable: ordering, batch formation, deadlines, overload, failure isolation."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Coroutine
from typing import Any

import pytest

from app import request_log
from app.batcher import Batcher, BatchStats, Entry, collect_batch
from app.errors import DeadlineExceeded, InferenceFailed, Overloaded


def run(coro_fn: Callable[[], Coroutine[Any, Any, Any]]) -> Any:
    return asyncio.run(coro_fn())


class Recorder:
    """predict(): doubles each item, records batches; can be held on a gate or told to fail."""

    def __init__(self, fail_on: object = None) -> None:
        self.batches: list[list[Any]] = []
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Event()
        self.fail_on = fail_on

    def __call__(self, items: list[Any]) -> list[Any]:
        self.batches.append(list(items))
        self.entered.set()
        self.gate.wait(5)
        if self.fail_on is not None and self.fail_on in items:
            raise ValueError("poisoned batch")
        return [item * 2 if isinstance(item, int) else ValueError(f"bad item {item!r}") for item in items]


async def wait_until_running(rec: Recorder) -> None:
    """Until a batch has entered ``predict`` (it then waits on ``rec.gate``)."""
    assert await asyncio.to_thread(rec.entered.wait, 5), "no batch reached predict"


async def eventually(condition: Callable[[], bool], timeout_s: float = 5.0) -> None:
    """Let the event loop run until ``condition()`` holds; fail after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition never held"
        await asyncio.sleep(0.001)


def test_results_come_back_to_their_own_callers() -> None:
    async def main() -> list[int]:
        b = Batcher(Recorder(), max_batch_size=4)
        b.start()
        try:
            return await asyncio.gather(*(b.submit(i) for i in range(23)))
        finally:
            await b.stop()

    assert run(main) == [i * 2 for i in range(23)]


def test_concurrent_requests_form_batches_up_to_the_limit_in_order() -> None:
    rec = Recorder()

    async def main() -> None:
        b = Batcher(rec, max_batch_size=4)
        b.start()
        try:
            await asyncio.gather(*(b.submit(i) for i in range(10)))
        finally:
            await b.stop()

    run(main)
    assert [len(batch) for batch in rec.batches] == [4, 4, 2]
    assert [item for batch in rec.batches for item in batch] == list(range(10))


def test_idle_model_runs_a_lone_request_at_once_and_queues_the_rest_behind_it() -> None:
    rec = Recorder()
    rec.gate.clear()

    async def main() -> list[int]:
        b = Batcher(rec, max_batch_size=8, max_wait_s=0.0)
        b.start()
        try:
            first = asyncio.ensure_future(b.submit(100))
            await wait_until_running(rec)  # dispatched alone, without waiting for company
            later = [asyncio.ensure_future(b.submit(i)) for i in range(5)]
            await eventually(lambda: b.depth == 5)
            rec.gate.set()
            return [await first, *(await asyncio.gather(*later))]
        finally:
            await b.stop()

    assert run(main) == [200, 0, 2, 4, 6, 8]
    assert rec.batches == [[100], [0, 1, 2, 3, 4]]


def test_on_depth_reports_the_queue_as_requests_queue_and_batches_take_them() -> None:
    rec = Recorder()
    rec.gate.clear()
    depths: list[int] = []

    async def main() -> None:
        b = Batcher(rec, max_batch_size=8, on_depth=depths.append)
        b.start()
        try:
            first = asyncio.ensure_future(b.submit(100))
            await wait_until_running(rec)
            later = [asyncio.ensure_future(b.submit(i)) for i in range(3)]
            await eventually(lambda: b.depth == 3)
            rec.gate.set()
            await asyncio.gather(first, *later)
        finally:
            await b.stop()

    run(main)
    # queued 1, taken (0); queued 1, 2, 3 behind the running batch; taken (0)
    assert depths == [1, 0, 1, 2, 3, 0]


def test_max_wait_lets_a_partial_batch_fill() -> None:
    rec = Recorder()

    async def main() -> None:
        b = Batcher(rec, max_batch_size=3, max_wait_s=30.0)
        b.start()
        try:
            first = asyncio.ensure_future(b.submit(0))
            await eventually(lambda: b.depth == 0 and not first.done())  # taken; its batch waits for company
            assert rec.batches == []
            await asyncio.gather(first, b.submit(1), b.submit(2))  # the third fills the batch: it runs at once
        finally:
            await b.stop()

    run(main)
    assert rec.batches == [[0, 1, 2]]


def test_max_wait_runs_a_partial_batch_once_it_expires() -> None:
    rec = Recorder()

    async def main() -> int:
        b = Batcher(rec, max_batch_size=8, max_wait_s=0.05)
        b.start()
        try:
            return await b.submit(4)
        finally:
            await b.stop()

    assert run(main) == 8
    assert rec.batches == [[4]]


def test_max_wait_stops_as_soon_as_the_batch_is_full() -> None:
    rec = Recorder()

    async def main() -> None:
        b = Batcher(rec, max_batch_size=2, max_wait_s=5.0, timeout_s=1.0)
        b.start()
        try:
            await asyncio.gather(b.submit(1), b.submit(2))  # would time out if it waited the 5 s
        finally:
            await b.stop()

    run(main)
    assert rec.batches == [[1, 2]]


def test_deadline_gives_504_and_expired_requests_never_reach_the_model() -> None:
    rec = Recorder()
    rec.gate.clear()

    async def main() -> None:
        b = Batcher(rec, max_batch_size=8, timeout_s=0.05)
        b.start()
        try:
            first = asyncio.ensure_future(b.submit(1))
            await wait_until_running(rec)
            queued = asyncio.ensure_future(b.submit(2))
            with pytest.raises(DeadlineExceeded):
                await first
            with pytest.raises(DeadlineExceeded):
                await queued
            rec.gate.set()
            assert await b.submit(3) == 6  # the batcher carries on
        finally:
            await b.stop()

    run(main)
    assert rec.batches == [[1], [3]]


def test_full_queue_is_rejected_at_once_with_503() -> None:
    rec = Recorder()
    rec.gate.clear()

    async def main() -> None:
        b = Batcher(rec, max_batch_size=1, max_queue=2)
        b.start()
        try:
            running = asyncio.ensure_future(b.submit(0))
            await wait_until_running(rec)
            queued = [asyncio.ensure_future(b.submit(i)) for i in (1, 2)]
            await eventually(lambda: b.depth == 2)
            with pytest.raises(Overloaded):  # raised while the batch still runs: rejected, not queued
                await b.submit(3)
            assert not rec.gate.is_set() and b.depth == 2
            rec.gate.set()
            assert [await running, *(await asyncio.gather(*queued))] == [0, 2, 4]
        finally:
            await b.stop()

    run(main)


def test_a_failing_batch_fails_only_its_own_requests(caplog: pytest.LogCaptureFixture) -> None:
    rec = Recorder(fail_on=13)

    async def main() -> None:
        b = Batcher(rec, max_batch_size=2)
        b.start()
        try:
            results = await asyncio.gather(*(b.submit(i) for i in (12, 13, 14, 15)), return_exceptions=True)
            assert isinstance(results[0], InferenceFailed) and isinstance(results[1], InferenceFailed)
            assert "poisoned batch" not in results[0].detail  # the exception's text is for the log, not clients
            assert "poisoned batch" in caplog.text
            assert results[2:] == [28, 30]
            assert b.consecutive_failures == 0  # the next batch succeeded
            assert await b.submit(1) == 2
        finally:
            await b.stop()

    run(main)


def test_a_per_item_error_fails_only_that_item() -> None:
    async def main() -> list[Any]:
        b = Batcher(Recorder(), max_batch_size=8)
        b.start()
        try:
            return await asyncio.gather(b.submit(1), b.submit("x"), b.submit(3), return_exceptions=True)
        finally:
            await b.stop()

    first, bad, third = run(main)
    assert (first, third) == (2, 6)
    assert isinstance(bad, ValueError)


def test_a_client_that_goes_away_does_not_break_its_batch() -> None:
    rec = Recorder()
    rec.gate.clear()

    async def main() -> None:
        b = Batcher(rec, max_batch_size=8)
        b.start()
        try:
            blocker = asyncio.ensure_future(b.submit(0))
            await wait_until_running(rec)
            gone = asyncio.ensure_future(b.submit(1))
            stays = asyncio.ensure_future(b.submit(2))
            await eventually(lambda: b.depth == 2)
            gone.cancel()
            await asyncio.wait([gone])  # the cancellation lands before the next batch forms
            rec.gate.set()
            assert await blocker == 0 and await stays == 4
            assert gone.cancelled()
            assert await b.submit(5) == 10
        finally:
            await b.stop()

    run(main)
    assert rec.batches[1] == [2]  # the departed request was dropped before the forward


def test_on_batch_reports_size_and_waits() -> None:
    seen: list[BatchStats] = []

    async def main() -> None:
        b = Batcher(Recorder(), max_batch_size=8, on_batch=seen.append)
        b.start()
        try:
            await asyncio.gather(*(b.submit(i) for i in range(3)))
        finally:
            await b.stop()

    run(main)
    assert [s.size for s in seen] == [3] and seen[0].ok
    assert len(seen[0].queue_waits_s) == 3 and all(w >= 0 for w in seen[0].queue_waits_s)


def test_the_request_log_receives_batch_size_and_timings() -> None:
    async def main() -> dict[str, Any]:
        b = Batcher(Recorder(), max_batch_size=8)
        b.start()
        record = request_log.begin()
        try:
            await b.submit(1)
        finally:
            await b.stop()
        return record.fields()

    fields = run(main)
    assert fields["batch_size"] == 1 and fields["queue_ms"] >= 0 and fields["inference_ms"] >= 0


def test_a_request_past_its_deadline_takes_no_queue_slot() -> None:
    rec = Recorder()

    async def main() -> None:
        b = Batcher(rec, max_batch_size=1, max_queue=1)
        b.start()
        try:
            with pytest.raises(DeadlineExceeded):
                await b.submit(1, deadline=time.monotonic() - 1)
            assert b.depth == 0
        finally:
            await b.stop()

    run(main)
    assert rec.batches == []


def test_a_crashed_loop_is_reported() -> None:
    crashes: list[str] = []

    async def main() -> None:
        b = Batcher(Recorder(), max_batch_size=2, on_crash=crashes.append)
        b.start()
        b._take_queued = None  # type: ignore[assignment,method-assign]  # a bug inside the loop
        with pytest.raises(InferenceFailed):  # answered, not left to its deadline
            await b.submit(1)
        await b.stop()

    run(main)
    assert len(crashes) == 1 and "TypeError" in crashes[0]


def test_stop_fails_what_is_still_queued() -> None:
    rec = Recorder()
    rec.gate.clear()

    async def main() -> None:
        b = Batcher(rec, max_batch_size=1)
        b.start()
        running = asyncio.ensure_future(b.submit(0))
        await wait_until_running(rec)
        queued = asyncio.ensure_future(b.submit(1))
        await eventually(lambda: b.depth == 1)
        await b.stop()
        rec.gate.set()
        with pytest.raises(InferenceFailed):
            await queued
        with pytest.raises(InferenceFailed):
            await running

    run(main)


def test_collect_batch_is_pure_and_filters() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        done = loop.create_future()
        done.cancel()
        entries = [
            Entry("a", loop.create_future(), 0.0, 10.0),
            Entry("gone", done, 0.0, 10.0),
            Entry("late", loop.create_future(), 0.0, 4.0),
            Entry("b", loop.create_future(), 0.0, 10.0),
        ]
        live, expired = collect_batch(entries, now=5.0)
        assert [e.item for e in live] == ["a", "b"]
        assert [e.item for e in expired] == ["late"]
        assert not any(e.future.done() for e in entries if e.item != "gone")

    run(main)
