"""``python -m bench.soak --duration-s N``: our server under steady load for N seconds, watched per interval.

Starts ``resnet-serve`` as the harness does (``bench.servers``), asks it once per good image for
its answer while idle, then drives it with ``bench.soak_load``'s closed loop (good images plus a
few bad requests) at a fixed concurrency. Every ``--interval-s`` it records the requests completed,
throughput, responses by outcome, p50/p99 latency, the server's RSS and open fds (its whole process
tree) and its ``resnet_serve_rejected_total`` by reason. Writes ``<out>.json``, ``.md`` and ``.png``,
prints the table and the verdict, and exits 1 when the soak failed (``bench.soak_report.verdict``).
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import shlex
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from app.settings import Settings
from bench import cpu, server_stats
from bench.runner import RunConfig, machine_info
from bench.servers import RunningServer, ServerOptions, serve
from bench.soak_load import OUTCOMES, ClosedLoop, Shot, Tally, bad_shots, mix, references
from bench.soak_report import Thresholds, verdict, write
from bench.workloads import Workload, digit_png, photo_jpeg, prepare_workload

__all__ = ["get_args_parser", "main"]


def get_args_parser() -> argparse.ArgumentParser:
    """Every flag, its default in its help."""
    p = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__.splitlines()[0] if __doc__ else "")
    p.add_argument("--duration-s", type=float, required=True, help="length of the whole run, warm-up included")
    p.add_argument("--interval-s", type=float, default=10.0, help="one record per interval; default 10")
    p.add_argument("--warmup-s", type=float, default=30.0, help="intervals ending by then are warm-up; default 30")
    p.add_argument("--concurrency", type=int, default=16, help="clients, each with one request in flight; default 16")
    p.add_argument("--workload", default="small", choices=["small", "large", "mixed"], help="default small")
    p.add_argument("--device", default="cpu", choices=["cpu", "sim"], help="sim: the simulated GPU; default cpu")
    p.add_argument("--processes", type=int, default=None, help="the server's --processes; default its own")
    p.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)), help="torch threads; default cores")
    p.add_argument("--timeout-s", type=float, default=60.0, help="per request; beyond it a transport error")
    p.add_argument("--max-rss-growth-mb", type=float, default=100.0, help="fail beyond this growth; default 100")
    p.add_argument("--max-fd-growth", type=int, default=64, help="fail beyond this many more open fds; default 64")
    p.add_argument(
        "--rising-mb-per-min", type=float, default=1.0, help="warn when RSS still rises faster over the second half"
    )
    p.add_argument("--work-dir", type=Path, default=Path("/tmp/resnet-serve-bench"), help="checkpoints and logs")
    p.add_argument(
        "--out", type=Path, default=Path(f"bench/results/{time.strftime('%Y-%m-%d')}-soak"), help="<out>.json/.md/.png"
    )
    return p


def _workloads(name: str, work_dir: Path) -> tuple[Workload, list[Workload]]:
    """The workload the server is started with, and the workloads whose images are sent.

    ``mixed``: both checkpoints in one directory (hard links), the small one the default model.
    """
    if name != "mixed":
        workload = prepare_workload(name, work_dir)
        return workload, [workload]
    small, large = prepare_workload("small", work_dir), prepare_workload("large", work_dir)
    directory = work_dir / "mixed"
    directory.mkdir(parents=True, exist_ok=True)
    for w in (small, large):
        (directory / w.checkpoint.name).unlink(missing_ok=True)
        os.link(w.checkpoint, directory / w.checkpoint.name)
    served = replace(
        small, name="mixed", checkpoint=directory / small.checkpoint.name, note=f"{small.note}; {large.note}"
    )
    return served, [small, large]


def _good_shots(workload: Workload) -> list[Shot]:
    """A few distinct images of the workload's kind (four 28x28 PNGs, or two 640x480 JPEGs)."""
    images = (
        [digit_png(seed=s) for s in range(4)] if workload.name == "small" else [photo_jpeg(seed=s) for s in range(2)]
    )
    return [
        Shot(f"{workload.name}-{i}", b, workload.content_type, workload.model_name, True) for i, b in enumerate(images)
    ]


def _footprint(server: RunningServer) -> dict[str, Any]:
    """The server's process tree now: how many processes, their RSS and open fds together."""
    tree = cpu.process_tree(server.pid)
    return {"rss_mb": round(server_stats.rss_mb(tree), 1), "processes": len(tree), "fds": server_stats.open_fds(tree)}


def _record(
    tally: Tally, t_s: float, seconds: float, footprint: dict[str, Any], use: cpu.CpuUsage, rejected: dict[str, int]
) -> dict[str, Any]:
    """One interval's figures (``warmup`` is set by the caller)."""
    p50, p99 = np.percentile(tally.latencies_ms, [50, 99]).tolist() if tally.latencies_ms else (None, None)
    requests = sum(tally.outcomes.values())
    return {
        "t_s": round(t_s, 2),
        "seconds": round(seconds, 2),
        "requests": requests,
        "throughput": round(requests / seconds, 2),
        "responses": {k: tally.outcomes[k] for k in OUTCOMES},
        "latency_ms": {"p50": None if p50 is None else round(p50, 2), "p99": None if p99 is None else round(p99, 2)},
        **footprint,
        "rejected": rejected,
        "server_cores": use.server,
        "client_cores": use.harness,
        "other_cores": use.other,
        "failure_examples": tally.first_failure,
    }


async def _rejected(client: httpx.AsyncClient) -> dict[str, int]:
    try:
        r = await client.get("/metrics")
        r.raise_for_status()
    except httpx.HTTPError:
        return {}
    return server_stats.rejected(r.text)


async def _soak(
    server: RunningServer, good: list[Shot], bad: list[Shot], args: argparse.Namespace
) -> tuple[list[dict[str, Any]], int | None]:
    """Reference answers, then the load with one record per interval; returns the records and the
    server's exit status if it died."""
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}", timeout=30) as client:
        reference = await references(client, server.predict_url, good)
        load = ClosedLoop(server.predict_url, mix(good, bad), reference, args.concurrency, args.timeout_s)
        stop = asyncio.Event()
        driver = asyncio.create_task(load.run(stop))
        records: list[dict[str, Any]] = []
        started = previous = time.monotonic()
        before = cpu.snapshot(cpu.process_tree(server.pid), None)
        count = math.ceil(args.duration_s / args.interval_s)
        for k in range(1, count + 1):
            boundary = min(k * args.interval_s, args.duration_s)
            await asyncio.sleep(max(started + boundary - time.monotonic(), 0))
            t_s = time.monotonic() - started
            footprint = _footprint(server)  # under load, before the last interval closes its connections
            exited = server.process.poll()
            if k == count or exited is not None:
                stop.set()
                await driver  # the requests in flight are counted in this last interval
            now = time.monotonic()
            after = cpu.snapshot(cpu.process_tree(server.pid), None)
            use, rejected = cpu.usage(before, after), await _rejected(client)
            records.append(_record(load.take(), t_s, now - previous, footprint, use, rejected))
            records[-1]["warmup"] = boundary <= args.warmup_s
            _progress(records[-1])
            previous, before = now, after
            if exited is not None:
                break
        return records, exited


def _progress(r: dict[str, Any]) -> None:
    """One line per interval on stderr; failures with an example each."""
    failed = {k: n for k, n in r["responses"].items() if n and k not in ("2xx", "4xx_expected")}
    line = f"t={r['t_s']:.0f}s {r['throughput']:.1f} req/s p99 {r['latency_ms']['p99']} ms"
    line += f" RSS {r['rss_mb']} MB fds {r['fds']}"
    print(line + (f" FAILED {failed} {r['failure_examples']}" if failed else ""), file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    """Run the soak, write and print its results; 1 when the verdict is a failure."""
    parser = get_args_parser()
    args = parser.parse_args(argv)
    if not 0 <= args.warmup_s < args.duration_s:
        parser.error("--warmup-s must be shorter than --duration-s")
    served, sent = _workloads(args.workload, args.work_dir)
    good = [shot for w in sent for shot in _good_shots(w)]
    bad = bad_shots(sent[0].image, sent[0].content_type, served.model_name, Settings().max_upload_bytes)
    precision = "fp32" if args.device == "cpu" else "fp16"
    opts = ServerOptions(device=args.device, precision=precision, threads=args.threads, processes=args.processes)
    with serve("ours", served, opts, args.work_dir / "logs") as server:
        records, exited = asyncio.run(_soak(server, good, bad, args))
    limits = Thresholds(args.max_rss_growth_mb, args.max_fd_growth, args.rising_mb_per_min)
    machine = machine_info(RunConfig(device=args.device))
    results: dict[str, Any] = {
        "machine": {**machine, "command": "python -m bench.soak " + shlex.join(sys.argv[1:] if argv is None else argv)},
        "config": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "workload": served.note,
        "mix": [shot.name for shot in mix(good, bad)],
        "server_log": str(server.log_path),
        "intervals": records,
        "verdict": verdict(records, limits, exited),
    }
    paths = write(results, args.out)
    print(paths["md"].read_text())
    for kind, path in paths.items():
        print(f"wrote {kind}: {path}")
    return 0 if results["verdict"]["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
