"""``--optimize`` against the eager fp32 torchvision ceiling, in the same minutes.

    python -m bench.optimized --workload large        # ResNet-50, 640x480 JPEG
    python -m bench.optimized --workload small        # the shipped Fashion-MNIST ResNet-20, 28x28 PNG

One run, in this order: the in-process ceiling of the plain eager model (torchvision's ResNet as it comes:
fp32, BN unfolded, contiguous; preprocessing + forward at its best batch size, and its batch-1 latency);
``--optimize auto`` ahead of time (``resnet-optimize``: the variant table); our server with ``--optimize
off``, then with ``--optimize auto`` (taking the cached choice), each under wrk at each concurrency; the
eager ceiling again. Ratios use the mean of the two eager ceilings around the served points. Writes
``<output>.json`` and ``<output>.md``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import torch

from app.engine import Engine
from app.optimize import CACHE_DIR_NAME, optimize_engine
from app.optimize_cli import format_report
from app.service import file_version
from bench import loadgen
from bench.ceiling import measure_ceiling
from bench.report import write_json_and_markdown
from bench.runner import RunConfig, machine_info
from bench.servers import ServerOptions, serve
from bench.workloads import WORKLOADS, Workload, prepare_workload
from models import load_checkpoint

__all__ = ["main"]

MAX_BATCH_SIZE = 32


def eager_reference(path: Path) -> Engine:
    """The checkpoint as plain eager PyTorch runs it: fp32, BatchNorm unfolded, contiguous memory format."""
    model, metadata = load_checkpoint(path)
    return Engine(path.stem, model.eval().requires_grad_(False), metadata, torch.device("cpu"), torch.float32, False)


def _ceiling(workload: Workload, batch_sizes: list[int], seconds: float) -> dict[str, Any]:
    print("eager torchvision ceiling (in process):")
    ceiling = measure_ceiling(eager_reference(workload.checkpoint), workload.image, batch_sizes, seconds)
    return ceiling.to_dict()


def _served(workload: Workload, mode: str, args: argparse.Namespace) -> dict[str, Any]:
    opts = ServerOptions(threads=args.threads, max_batch_size=MAX_BATCH_SIZE, extra_args=("--optimize", mode))
    body_file = args.work_dir / f"body-{workload.name}.bin"
    body_file.write_bytes(workload.image)
    started = time.monotonic()
    with serve("ours", workload, opts, args.work_dir / "logs") as server:
        startup_s = time.monotonic() - started
        info = httpx.get(f"http://127.0.0.1:{server.port}/models/{workload.model_name}", timeout=10).json()
        url = server.predict_url
        loadgen.run_point(url, body_file, workload.content_type, 8, args.warmup, server.pid)
        points = []
        for level in args.concurrency:
            point = loadgen.run_point(url, body_file, workload.content_type, level, args.duration, server.pid)
            print(
                f"  --optimize {mode} ({info['variant']}) c={level:3d}: {point.throughput:8.1f} req/s  "
                f"p50 {point.latency_ms['p50']:8.2f} ms  errors {point.errors}"
            )
            points.append(point.to_dict())
            loadgen.wait_quiet(server.pid)
    return {"mode": mode, "variant": info["variant"], "startup_s": round(startup_s, 2), "points": points}


def _markdown(results: dict[str, Any]) -> str:
    eager = results["eager_ceiling"]
    lines = [
        f"# --optimize vs the eager fp32 ceiling: {results['workload']}",
        "",
        f"`{results['machine']['command']}` at `{results['machine']['commit']}`, {results['machine']['date']}, "
        f"{results['machine']['cpu']} x{results['machine']['cores']}, {results['threads']} torch threads.",
        "",
        "Eager torchvision ceiling (in process, preprocessing + forward): "
        f"{eager['images_per_s']:.1f} img/s at its best batch size, {eager['latency_ms']:.1f} ms at batch 1 "
        f"(mean of before {results['eager_before']['best_images_per_s']:.1f} and after "
        f"{results['eager_after']['best_images_per_s']:.1f} img/s).",
        "",
        "| served | variant | c | req/s | x eager ceiling | p50 ms | eager batch-1 latency / p50 | errors |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for block in results["served"]:
        for p in block["points"]:
            lines.append(
                f"| --optimize {block['mode']} | {block['variant']} | {p['concurrency']} | {p['throughput']:.1f} | "
                f"{p['throughput'] / eager['images_per_s']:.2f}x | {p['latency_ms']['p50']:.1f} | "
                f"{eager['latency_ms'] / p['latency_ms']['p50']:.2f}x | {p['errors']} |"
            )
    lines += ["", "Variants (`resnet-optimize`, same minutes):", "", "```", results["variant_table"], "```", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run and write the results; prints as it goes."""
    p = argparse.ArgumentParser(prog="python -m bench.optimized", description=__doc__.splitlines()[0])
    p.add_argument("--workload", choices=WORKLOADS, default="large")
    p.add_argument("--concurrency", type=lambda t: [int(x) for x in t.split(",")], default=[1, 32])
    p.add_argument("--duration", type=float, default=15.0, help="seconds per concurrency level")
    p.add_argument("--warmup", type=float, default=3.0, help="unrecorded load before a server's points")
    p.add_argument("--ceiling-seconds", type=float, default=3.0)
    p.add_argument("--batch-sizes", type=lambda t: [int(x) for x in t.split(",")], default=[1, 8, 16, 32])
    p.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    p.add_argument("--work-dir", type=Path, default=Path("/tmp/resnet-serve-bench"))
    p.add_argument("--output", type=Path, default=None, help="default bench/results/<date>-optimize-<workload>")
    argv = sys.argv[1:] if argv is None else argv
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    args.work_dir.mkdir(parents=True, exist_ok=True)
    workload = prepare_workload(args.workload, args.work_dir)
    output = args.output or Path("bench/results") / f"{time.strftime('%Y-%m-%d')}-optimize-{args.workload}"
    before = _ceiling(workload, args.batch_sizes, args.ceiling_seconds)
    engine = Engine.load(workload.checkpoint, device=torch.device("cpu"))
    report = optimize_engine(  # what the auto server will find in its cache (same key: threads, batch size)
        engine,
        mode="auto",
        version=file_version(workload.checkpoint),
        min_agreement=0.99,
        max_batch_size=MAX_BATCH_SIZE,
        threads=args.threads,
        cache_dir=workload.weights_dir / CACHE_DIR_NAME,
    )
    table = format_report(workload.model_name, report)
    print(table)
    del engine
    served = [_served(workload, mode, args) for mode in ("off", "auto")]
    after = _ceiling(workload, args.batch_sizes, args.ceiling_seconds)
    results = {
        "workload": args.workload,
        "note": workload.note,
        "threads": args.threads,
        "machine": {**machine_info(RunConfig()), "command": " ".join(["python -m bench.optimized", *(argv or [])])},
        "eager_before": before,
        "eager_after": after,
        "eager_ceiling": {
            "images_per_s": statistics.mean([before["best_images_per_s"], after["best_images_per_s"]]),
            "latency_ms": statistics.mean([before["latency_floor_ms"], after["latency_floor_ms"]]),
        },
        "optimization": report.to_dict(),
        "variant_table": table,
        "served": served,
    }
    output.parent.mkdir(parents=True, exist_ok=True)
    write_json_and_markdown(results, output, _markdown(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
