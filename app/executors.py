"""The service's threads: preprocessing workers, the forward thread, and one thread per model load.

Pillow and torch release the GIL, so these threads do real work beside the event loop. One forward
thread runs every model's batches one after another (one device, one queue of work on it). Loading
and warming a model runs in a thread of its own, so it never holds up the batches of models already
serving, and that thread ends with the load: a thread that has run a parallel torch op keeps an
OpenMP team for life, and libgomp stops spin-waiting once its threads outnumber the cores. On the
2-core VM one idle loader team beside the forward's made every 28x28 request 2.5 ms slower at c=1
(p50 4.4 ms against 1.8 ms). Each thread sets its torch intra-op threads once, when it starts.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TypeVar

import torch

__all__ = ["Executors"]

T = TypeVar("T")


def _pool(threads: int, name: str, torch_threads: int) -> ThreadPoolExecutor:
    return ThreadPoolExecutor(
        threads, thread_name_prefix=name, initializer=torch.set_num_threads, initargs=(torch_threads,)
    )


@dataclass(frozen=True)
class Executors:
    """The two pools and the loader threads' torch threads; ``create`` sizes them, ``shutdown`` releases them."""

    preprocess: ThreadPoolExecutor
    forward: ThreadPoolExecutor
    torch_threads: int

    @classmethod
    def create(cls, *, workers: int, torch_threads: int) -> Executors:
        """``workers`` preprocessing threads with one torch thread each (their tensor ops are tiny, and each
        extra thread kept an OpenMP team spinning beside the forward's); one forward thread, and loader
        threads, with ``torch_threads`` each."""
        return cls(_pool(workers, "preprocess", 1), _pool(1, "forward", torch_threads), torch_threads)

    async def run_load(self, load: Callable[[], T]) -> T:
        """``load()`` in a new thread with ``torch_threads``, which ends (and takes its OpenMP team) with it."""
        thread = _pool(1, "load", self.torch_threads)
        try:
            return await asyncio.get_running_loop().run_in_executor(thread, load)
        finally:
            thread.shutdown(wait=False)

    async def run_forward(self, work: Callable[[], T]) -> T:
        """``work()`` in the forward thread, between batches."""
        return await asyncio.get_running_loop().run_in_executor(self.forward, work)

    def shutdown(self) -> None:
        """Stop accepting work and drop what has not started (does not wait)."""
        for pool in (self.preprocess, self.forward):
            pool.shutdown(wait=False, cancel_futures=True)
