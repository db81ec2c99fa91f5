"""``python -m bench all|ceiling|serve``: flags -> ``RunConfig`` -> run -> results files."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from app.settings import Settings
from app.tuning import keep_freed_memory
from bench.loadgen import find_wrk
from bench.report import write_results
from bench.runner import RunConfig, other_work, run
from bench.servers import SYSTEMS
from bench.workloads import DEFAULT_SMALL_CHECKPOINT, WORKLOADS
from models.device import PRECISIONS

__all__ = ["get_args_parser", "main"]


def _ints(text: str) -> list[int]:
    return [int(v) for v in text.split(",") if v.strip()]


def _names(choices: tuple[str, ...] | list[str]) -> type:
    def parse(text: str) -> list[str]:
        names = list(choices) if text == "all" else [v.strip() for v in text.split(",") if v.strip()]
        unknown = sorted(set(names) - set(choices))
        if unknown:
            raise argparse.ArgumentTypeError(f"unknown {unknown}; choose from {list(choices)} or 'all'")
        return names

    return parse  # type: ignore[return-value]


def get_args_parser() -> argparse.ArgumentParser:
    """Every flag, its default in its help."""
    p = argparse.ArgumentParser(prog="python -m bench", description="Ceiling, our service and its peers, one run.")
    p.add_argument("mode", choices=["all", "ceiling", "serve"], help="all = ceiling then served; serve probes only")
    p.add_argument(
        "--workload", type=_names(WORKLOADS), default=list(WORKLOADS), help="large,small or all; default all"
    )
    p.add_argument("--systems", type=_names(list(SYSTEMS)), default=list(SYSTEMS), help=f"default {','.join(SYSTEMS)}")
    p.add_argument("--concurrency", type=_ints, default=[1, 8, 32, 64], help="default 1,8,32,64")
    p.add_argument("--duration", type=float, default=15.0, help="seconds per concurrency level; default 15")
    p.add_argument("--warmup", type=float, default=3.0, help="unrecorded load per server before its points; default 3")
    p.add_argument("--batch-sizes", type=_ints, default=[1, 2, 4, 8, 16, 32, 64], help="ceiling sweep; default 1..64")
    p.add_argument("--ceiling-seconds", type=float, default=3.0, help="per ceiling measurement; default 3")
    p.add_argument("--probe-seconds", type=float, default=2.5, help="per drift probe; default 2.5")
    p.add_argument("--device", default="cpu", help="cpu, cuda or sim (the simulated GPU); default cpu")
    p.add_argument("--precision", default=None, choices=PRECISIONS, help="default fp32 (cuda, sim: fp16)")
    p.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)), help="torch threads; default cores")
    p.add_argument("--max-batch-size", type=int, default=32, help="ours (autotuned below it); default 32")
    p.add_argument("--processes", type=int, default=None, help="ours: --processes; default its own default")
    p.add_argument("--peer-max-batch-size", type=int, default=8, help="LitServe max_batch_size; default 8")
    p.add_argument("--peer-batch-timeout-ms", type=float, default=5.0, help="LitServe batch_timeout; default 5 ms")
    p.add_argument(
        "--request-format",
        default="native",
        choices=["native", "raw", "multipart"],
        help="native: raw image body (LitServe: base64 JSON, it takes no raw body); default native",
    )
    p.add_argument(
        "--small-checkpoint", type=Path, default=DEFAULT_SMALL_CHECKPOINT, help=f"default {DEFAULT_SMALL_CHECKPOINT}"
    )
    p.add_argument(
        "--pin",
        action="store_true",
        help="server and in-process ceiling on the first core (1 torch thread), wrk on the others",
    )
    p.add_argument(
        "--simulated",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also the request path vs the floor on one pinned core, and the simulated-GPU table "
        "(not with --device cuda); default on",
    )
    p.add_argument(
        "--sim-processes",
        type=_ints,
        default=sorted({1, len(os.sched_getaffinity(0))}),
        help="--processes choices for the simulated-GPU table; default 1 and the core count",
    )
    p.add_argument("--work-dir", type=Path, default=Path("/tmp/resnet-serve-bench"), help="checkpoints, bodies, logs")
    p.add_argument("--output-dir", type=Path, default=Path("bench/results"), help="default bench/results")
    return p


def main(argv: list[str] | None = None) -> int:
    """Run and write results; 1 when wrk is missing for a run that serves."""
    args = get_args_parser().parse_args(argv)
    if args.mode != "ceiling" and find_wrk() is None:
        print("wrk not found: apt-get install -y wrk", file=sys.stderr)
        return 1
    # The ceiling and the probes run in this process: give them the allocator policy our server uses by
    # default (app/tuning.py), or ours would be measured against a handicapped ceiling. The peers keep glibc's.
    keep_freed_memory(Settings.model_fields["malloc_keep_mb"].default)
    if other_work():
        print("warning: a training job is running; figures from this run are not valid for comparison", file=sys.stderr)
    config = RunConfig(
        workloads=args.workload,
        systems=args.systems,
        concurrency=args.concurrency,
        duration_s=args.duration,
        warmup_s=args.warmup,
        batch_sizes=args.batch_sizes,
        ceiling_s=args.ceiling_seconds,
        probe_s=args.probe_seconds,
        ceiling=args.mode in ("all", "ceiling"),
        serve=args.mode in ("all", "serve"),
        device=args.device,
        precision=args.precision or ("fp32" if args.device == "cpu" else "fp16"),
        threads=args.threads,
        max_batch_size=args.max_batch_size,
        processes=args.processes,
        peer_max_batch_size=args.peer_max_batch_size,
        peer_batch_timeout_ms=args.peer_batch_timeout_ms,
        request_format=args.request_format,
        small_checkpoint=args.small_checkpoint,
        work_dir=args.work_dir,
        pin=args.pin,
        simulated=args.simulated,
        sim_processes=args.sim_processes,
    )
    results = run(config)
    for kind, path in write_results(results, args.output_dir).items():
        print(f"wrote {kind}: {path}")
    return 0
