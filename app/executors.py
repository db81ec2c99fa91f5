"""The service's threads: preprocessing workers, the forward thread, the model loader.

Pillow and torch release the GIL, so these threads do real work beside the event loop. One forward
thread runs every model's batches one after another (one device, one queue of work on it); loading
and warming a model runs in its own thread, so it never holds up the batches of models already
serving. Each thread sets its torch intra-op threads once, when it starts.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import torch

__all__ = ["Executors"]


def _pool(threads: int, name: str, torch_threads: int) -> ThreadPoolExecutor:
    return ThreadPoolExecutor(
        threads, thread_name_prefix=name, initializer=torch.set_num_threads, initargs=(torch_threads,)
    )


@dataclass(frozen=True)
class Executors:
    """The three pools; ``create`` sizes them, ``shutdown`` releases them."""

    preprocess: ThreadPoolExecutor
    forward: ThreadPoolExecutor
    load: ThreadPoolExecutor

    @classmethod
    def create(cls, *, workers: int, torch_threads: int) -> Executors:
        """``workers`` preprocessing threads with one torch thread each (their tensor ops are tiny, and each
        extra thread kept an OpenMP team spinning beside the forward's); one forward and one loader thread
        with ``torch_threads`` each."""
        return cls(
            preprocess=_pool(workers, "preprocess", 1),
            forward=_pool(1, "forward", torch_threads),
            load=_pool(1, "load", torch_threads),
        )

    def shutdown(self) -> None:
        """Stop accepting work and drop what has not started (does not wait)."""
        for pool in (self.preprocess, self.forward, self.load):
            pool.shutdown(wait=False, cancel_futures=True)
