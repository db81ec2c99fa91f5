"""``python -m bench.request_cost``: our request path's CPU per request, in process, without HTTP.

The app (``create_app``) serves the default model on the simulated device (``--device sim``: the forward
uses no CPU), and ``--requests`` POST /predict calls of the small workload's 28x28 PNG go straight into
it as ASGI messages, ``--concurrency`` at a time, on uvloop, after ``--warmup`` unmeasured ones. It
prints the process's CPU time per request: routing, reading the body, decoding, batching, metrics,
logging and JSON, none of uvicorn's HTTP. ``--profile`` adds cProfile's top functions (which slows
everything down: read it for proportions). Pin it for stable figures: ``taskset -c 0 python -m ...``.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import logging
import os
import pstats
import time
from pathlib import Path
from typing import Any

import uvloop
from fastapi import FastAPI

from app.logs import configure_logging
from app.main import create_app
from app.settings import Settings
from app.tuning import tune_process
from bench.workloads import DEFAULT_SMALL_CHECKPOINT, digit_png

__all__ = ["main", "measure"]


def _scope(body: bytes) -> dict[str, Any]:
    headers = [(b"host", b"bench"), (b"content-type", b"image/png"), (b"content-length", str(len(body)).encode())]
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/predict",
        "raw_path": b"/predict",
        "root_path": "",
        "query_string": b"",
        "headers": headers,
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 80),
        "state": {},
    }


async def _request(app: FastAPI, body: bytes) -> None:
    sent = False
    statuses: list[int] = []

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if sent:  # the app only asks again to watch for a disconnect: there is none
            await asyncio.Event().wait()
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            statuses.append(message["status"])

    await app(_scope(body), receive, send)
    if statuses != [200]:
        raise RuntimeError(f"POST /predict answered {statuses}")


async def measure(
    app: FastAPI, body: bytes, requests: int, concurrency: int, warmup: int, profile: cProfile.Profile | None
) -> tuple[float, float]:
    """(CPU µs per request, requests/s) over ``requests`` calls, once the app's models are ready."""
    async with app.router.lifespan_context(app):
        registry = app.state.registry
        while not registry.ready:
            if registry.state == "failed":
                raise RuntimeError("the model failed to load")
            await asyncio.sleep(0.05)
        slots = asyncio.Semaphore(concurrency)

        async def one() -> None:
            async with slots:
                await _request(app, body)

        await asyncio.gather(*(one() for _ in range(warmup)))
        cpu, wall = time.process_time(), time.perf_counter()
        if profile is not None:
            profile.enable()
        await asyncio.gather(*(one() for _ in range(requests)))
        if profile is not None:
            profile.disable()
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    return cpu / requests * 1e6, requests / wall


def main(argv: list[str] | None = None) -> int:
    """Measure and print; with ``--profile``, the top functions by own time too."""
    p = argparse.ArgumentParser(prog="python -m bench.request_cost", description=__doc__)
    p.add_argument("--requests", type=int, default=20_000, help="measured requests; default 20000")
    p.add_argument("--concurrency", type=int, default=64, help="requests in flight; default 64")
    p.add_argument("--warmup", type=int, default=2_000, help="unmeasured requests first; default 2000")
    p.add_argument("--log-level", default="warning", help="the server's log level (info: one line per request)")
    p.add_argument(
        "--checkpoint", type=Path, default=DEFAULT_SMALL_CHECKPOINT, help=f"default {DEFAULT_SMALL_CHECKPOINT}"
    )
    p.add_argument("--profile", action="store_true", help="also print cProfile's top 30 functions by own time")
    args = p.parse_args(argv)
    settings = Settings(
        weights_dir=args.checkpoint.parent,
        default_model=args.checkpoint.stem,
        device="sim",
        precision="fp16",
        workers=1,
        log_level=args.log_level,
    )
    configure_logging(settings.log_level, "json")
    logging.getLogger().handlers[0].setStream(open(os.devnull, "w"))  # noqa: SIM115  (lives as long as the process)
    tune_process(settings)
    profile = cProfile.Profile() if args.profile else None
    app = create_app(settings)
    cpu_us, rate = uvloop.run(measure(app, digit_png(), args.requests, args.concurrency, args.warmup, profile))
    print(f"{args.requests} requests at c={args.concurrency}: {cpu_us:.1f} us CPU per request, {rate:.0f} requests/s")
    if profile is not None:
        pstats.Stats(profile).sort_stats("tottime").print_stats(30)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
