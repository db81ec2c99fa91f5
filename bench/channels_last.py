"""``python -m bench.channels_last CHECKPOINT``: the forward in channels_last against contiguous, interleaved.

The measurement behind ``RESNET_SERVE_CHANNELS_LAST`` (default on): both layouts of the same model,
with the service's own ``Engine``, timed in alternation so the machine's drift hits both alike.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

import torch

from app.engine import Engine
from models.device import resolve_device

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    """Print the median forward time of each layout and their ratio."""
    p = argparse.ArgumentParser(prog="python -m bench.channels_last", description=__doc__)
    p.add_argument("checkpoint", type=Path, help="a .safetensors checkpoint")
    p.add_argument("--batch-size", type=int, default=8, help="default 8")
    p.add_argument("--rounds", type=int, default=8, help="timed forwards per layout (after one untimed); default 8")
    p.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)), help="torch threads; default cores")
    p.add_argument("--device", default="cpu", help="default cpu")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    engines = {layout: Engine.load(args.checkpoint, device=device, channels_last=layout) for layout in (True, False)}
    batch = engines[True].blank_batch(args.batch_size)
    times: dict[bool, list[float]] = {True: [], False: []}
    for round_ in range(args.rounds + 1):
        for layout, engine in engines.items():
            started = time.perf_counter()
            engine.predict(batch).cpu()
            if round_:  # the first round is the untimed warm-up
                times[layout].append(time.perf_counter() - started)
    medians = {layout: statistics.median(t) for layout, t in times.items()}
    for layout, name in ((True, "channels_last"), (False, "contiguous")):
        print(f"{name:>13}: batch {args.batch_size} forward {medians[layout] * 1000:.1f} ms (median of {args.rounds})")
    print(f"contiguous / channels_last: {medians[False] / medians[True]:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
