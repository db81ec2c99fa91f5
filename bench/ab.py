"""``python -m bench.ab --baseline REV``: our service at REV against this checkout, in the same minutes.

This machine's speed drifts by 30-100% over minutes, so a change to the serving code is judged by
interleaving: each round starts the baseline's server and then the current one (the order alternates
every round), drives each with wrk at every concurrency level, and stops it. The ratio current /
baseline is taken per round and summarised by its median over rounds. The baseline runs from REV's
tree (``git archive``) with this environment's packages, so only our code differs.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

from bench import cpu, loadgen
from bench.servers import ServerOptions, serve
from bench.workloads import DEFAULT_SMALL_CHECKPOINT, WORKLOADS, prepare_workload

__all__ = ["main"]

REPO = Path(__file__).resolve().parent.parent


def _export(rev: str, work_dir: Path) -> Path:
    """The tree of ``rev``, exported under ``work_dir`` (``git archive``: nothing is registered in the repo)."""
    commit = subprocess.run(
        ["git", "rev-parse", "--short", rev], cwd=REPO, check=True, capture_output=True, text=True
    ).stdout.strip()
    path = work_dir / f"baseline-{commit}"
    if not (path / "app").is_dir():
        path.mkdir(parents=True, exist_ok=True)
        archive = subprocess.run(["git", "archive", "--format=tar", commit], cwd=REPO, check=True, capture_output=True)
        subprocess.run(["tar", "-x", "-C", str(path)], input=archive.stdout, check=True)
    return path


def _ints(text: str) -> list[int]:
    return [int(v) for v in text.split(",") if v.strip()]


def get_args_parser() -> argparse.ArgumentParser:
    """Every flag, its default in its help."""
    p = argparse.ArgumentParser(prog="python -m bench.ab", description=__doc__.splitlines()[0] if __doc__ else "")
    p.add_argument("--baseline", required=True, help="git revision to compare against (e.g. HEAD~1, a commit)")
    p.add_argument("--workload", default="small", choices=list(WORKLOADS), help="default small")
    p.add_argument("--concurrency", type=_ints, default=[1, 64], help="default 1,64")
    p.add_argument("--rounds", type=int, default=3, help="baseline/current pairs; default 3")
    p.add_argument("--duration", type=float, default=10.0, help="seconds per point; default 10")
    p.add_argument("--warmup", type=float, default=2.0, help="unrecorded load before a server's points; default 2")
    p.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)), help="torch threads; default cores")
    p.add_argument("--max-batch-size", type=int, default=32, help="default 32")
    p.add_argument("--work-dir", type=Path, default=Path("/tmp/resnet-serve-bench"), help="checkpoints, worktree, logs")
    p.add_argument("--pin", action="store_true", help="server on the first core (1 torch thread), wrk on the others")
    p.add_argument("--output", type=Path, default=None, help="also write the results here as JSON")
    return p


def _points(source: Path | None, args: argparse.Namespace, workload: Any, body: Path) -> dict[int, dict[str, Any]]:
    server_cpus, wrk_cpus = cpu.pin_plan() if args.pin else (None, None)
    threads = len(server_cpus) if server_cpus is not None else args.threads
    opts = ServerOptions(threads=threads, max_batch_size=args.max_batch_size, cpus=server_cpus)
    with serve("ours", workload, opts, args.work_dir / "logs", source=source) as server:
        url, kind = server.predict_url, workload.content_type
        loadgen.warm_up(url, body, kind, 8, args.warmup, server.pid, cpus=wrk_cpus)
        points = {}
        for level in args.concurrency:
            point = loadgen.run_point(url, body, kind, level, args.duration, server.pid, cpus=wrk_cpus)
            points[level] = {
                "throughput": point.throughput,
                "p50_ms": point.latency_ms["p50"],
                "errors": point.errors,
                "server_cpu_us_per_request": point.server_cpu_us_per_request,
            }
            loadgen.wait_quiet(server.pid)
    return points


def main(argv: list[str] | None = None) -> int:
    """Run the rounds, print per-round figures and the median ratios; 1 when wrk is missing."""
    args = get_args_parser().parse_args(argv)
    if loadgen.find_wrk() is None:
        print("wrk not found: apt-get install -y wrk", file=sys.stderr)
        return 1
    args.work_dir.mkdir(parents=True, exist_ok=True)
    baseline = _export(args.baseline, args.work_dir)
    workload = prepare_workload(args.workload, args.work_dir, DEFAULT_SMALL_CHECKPOINT)
    body = args.work_dir / f"ab-body-{workload.name}.bin"
    body.write_bytes(workload.image)
    print(f"== {workload.note}: {baseline.name} vs this checkout, {args.rounds} rounds")
    rounds = []
    for i in range(args.rounds):
        order = [("baseline", baseline), ("current", None)]
        if i % 2:
            order.reverse()
        result = {name: _points(source, args, workload, body) for name, source in order}
        rounds.append(result)
        for level in args.concurrency:
            b, c = result["baseline"][level], result["current"][level]
            print(
                f"  round {i + 1} c={level:3d}: baseline {b['throughput']:8.1f} req/s p50 {b['p50_ms']:7.2f} ms "
                f"{b['server_cpu_us_per_request']:6.0f} us/req | current {c['throughput']:8.1f} req/s "
                f"p50 {c['p50_ms']:7.2f} ms {c['server_cpu_us_per_request']:6.0f} us/req | "
                f"ratio {c['throughput'] / b['throughput']:.3f}"
            )
    summary = {}
    for level in args.concurrency:
        ratios = [r["current"][level]["throughput"] / r["baseline"][level]["throughput"] for r in rounds]
        p50s = [r["current"][level]["p50_ms"] - r["baseline"][level]["p50_ms"] for r in rounds]
        costs = [
            r["current"][level]["server_cpu_us_per_request"] / r["baseline"][level]["server_cpu_us_per_request"]
            for r in rounds
        ]
        summary[level] = {  # medians over rounds of current / baseline (p50: current - baseline)
            "throughput_ratio": statistics.median(ratios),
            "p50_delta_ms": statistics.median(p50s),
            "cpu_per_request_ratio": statistics.median(costs),
        }
        per_round = ", ".join(f"{r:.3f}" for r in ratios)
        print(
            f"c={level:3d}: current/baseline throughput {statistics.median(ratios):.3f} (median; rounds {per_round}); "
            f"p50 {statistics.median(p50s):+.2f} ms; server CPU per request {statistics.median(costs):.3f}x"
        )
    if args.output is not None:
        doc = {"baseline": args.baseline, "workload": workload.note, "rounds": rounds, "summary": summary}
        args.output.write_text(json.dumps(doc, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
