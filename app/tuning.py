"""Process-wide runtime tuning of a serving process, applied once at start-up by ``resnet-serve``.

Each knob was measured on the 2-core development VM (ResNet-20 on 28x28 PNGs unless noted); the
figures below are what justified it. The knobs are environment variables (see the README's Tuning
table); the library code (``app.engine``, ``app.batcher``...) never changes process state itself, so
unit tests and the benchmark's in-process ceiling get exactly what they ask for.

- **glibc keeps freed memory** (``RESNET_SERVE_MALLOC_KEEP_MB``, default 256). glibc hands big blocks
  back to the kernel as soon as they are freed (``M_TRIM_THRESHOLD`` and the ``mmap`` threshold adapt
  from 128 KiB), so every forward of a large batch page-faulted its activation buffers back in: batch
  32 took 8.3 ms instead of 5.0 ms, and the warm-up autotune wrongly capped batches at 16. Fixing both
  thresholds makes freed blocks reusable; PyTorch's CPU performance guide gets the same effect by
  preloading jemalloc or tcmalloc. The benchmark's in-process ceiling applies the same policy.
- **Rarer gen-0 garbage collections** (``RESNET_SERVE_GC_GEN0_THRESHOLD``, default 20,000). Each
  request allocates a few hundred short-lived objects; with CPython's default threshold (700) the
  collector ran every few requests and took 12% of the event loop's time at c=64. The older
  generations are collected every 50 younger collections (CPython: 10).
- **Startup objects frozen** (after every model is warm): modules, weights and the OpenAPI schema
  live until exit; ``gc.freeze()`` moves them out of the collector's reach so the collections that
  request traffic triggers stay short.
- **Torch threads** (``--torch-threads``, default: the cores). Set for the main thread here; the
  forward and loader threads set it for themselves (``app.executors``), and preprocessing workers use
  one thread each (with more, each kept an OpenMP team spinning beside the forward's: 9 ms more per
  ResNet-50 request at c=1).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import logging
import sys

import torch

from app.settings import Settings

__all__ = ["freeze_startup_objects", "keep_freed_memory", "tune_process"]

log = logging.getLogger("app.tuning")

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_MAX_MMAP_THRESHOLD = 32 << 20  # glibc's ceiling for M_MMAP_THRESHOLD on 64-bit


def keep_freed_memory(megabytes: int) -> bool:
    """Let glibc keep up to ``megabytes`` of freed memory (0: leave its defaults); False where not glibc."""
    if megabytes <= 0 or not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl and other libcs have no mallopt
        return False
    trim = mallopt(_M_TRIM_THRESHOLD, megabytes << 20)
    mmap = mallopt(_M_MMAP_THRESHOLD, min(megabytes << 20, _MAX_MMAP_THRESHOLD))
    if not (trim and mmap):
        log.warning("mallopt refused the thresholds; glibc keeps its defaults")
        return False
    return True


def tune_process(settings: Settings) -> None:
    """Allocator policy, garbage-collector threshold and torch threads; call once, before serving."""
    keep_freed_memory(settings.malloc_keep_mb)
    gc.set_threshold(settings.gc_gen0_threshold, 50, 50)  # older generations: 50 younger collections each
    torch.set_num_threads(settings.torch_threads)


def freeze_startup_objects() -> None:
    """Collect once, then exempt everything alive now from future collections (call when ready)."""
    gc.collect()
    gc.freeze()
