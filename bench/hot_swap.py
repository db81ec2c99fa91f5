"""What a hot-swap costs the requests in flight: latency while a new version loads, is checked and is switched in.

    python -m bench.hot_swap --workload small --clients 8 --swaps 3
    python -m bench.hot_swap --workload large --clients 8 --swaps 2

Our server (``--model-control --optimize off``) serves the workload's model under ``--clients`` closed-loop
clients. Every ``--steady-s`` seconds the model's file is replaced (atomically) by its other version (the same
weights and golden images, another content hash) and ``POST /models/{name}/reload`` swaps it in. Every request
is recorded (start, end, status, version), and the latencies are compared:

- steady: requests that started and ended outside every swap (from the reload call to 1 s after its answer);
- during a load: requests that overlapped the candidate's load, warm-up and check;
- at a switch: requests in flight at the instant each reload answered (the switch is just before).

One batch at the model's batch cap (``/models/{name}/profile``) is the yardstick: a swap should add at most about
that to any request. Results: ``bench/results/<date>-hot-swap-<workload>.{json,md}``.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import time
from dataclasses import asdict, dataclass, replace
from datetime import date
from pathlib import Path
from typing import Any

import httpx

from bench.report import write_json_and_markdown
from bench.servers import ServerOptions, serve
from bench.workloads import WORKLOADS, Workload, prepare_workload
from models import load_checkpoint, read_golden, save_checkpoint

RESULTS = Path(__file__).resolve().parent / "results"


@dataclass(frozen=True)
class Sample:
    started: float
    ended: float
    status: int
    version: str | None


@dataclass(frozen=True)
class Swap:
    sent: float
    answered: float
    status: int
    seconds: float | None  # the server's own account: load, warm-up, check and switch


def other_version(path: Path, target: Path) -> Path:
    """``path``'s weights and golden images under another content hash (the provenance says why)."""
    model, metadata = load_checkpoint(path)
    provenance = replace(metadata.provenance, command=f"{metadata.provenance.command} # bench.hot_swap")
    return save_checkpoint(model, target, replace(metadata, provenance=provenance), golden=read_golden(path))


async def _client(url: str, workload: Workload, samples: list[Sample], stop: asyncio.Event) -> None:
    async with httpx.AsyncClient(timeout=120) as client:
        while not stop.is_set():
            started = time.monotonic()
            try:
                response = await client.post(
                    url, content=workload.image, headers={"content-type": workload.content_type}
                )
                status = response.status_code
                version = response.json().get("version") if status == 200 else None
            except httpx.TransportError:
                status, version = 0, None
            samples.append(Sample(started, time.monotonic(), status, version))


def _stats(latencies_s: list[float]) -> dict[str, float | int]:
    if not latencies_s:
        return {"requests": 0}
    ms = sorted(1000 * t for t in latencies_s)
    return {
        "requests": len(ms),
        "p50_ms": round(statistics.median(ms), 2),
        "p99_ms": round(ms[min(len(ms) - 1, int(0.99 * len(ms)))], 2),
        "max_ms": round(ms[-1], 2),
    }


def analyse(samples: list[Sample], swaps: list[Swap], settle_s: float = 1.0) -> dict[str, Any]:
    """Latency of the steady requests, of those overlapping a load, and of those in flight at a switch."""
    windows = [(s.sent, s.answered + settle_s) for s in swaps]
    steady = [s.ended - s.started for s in samples if all(s.ended < a or s.started > b for a, b in windows)]
    loading = [s.ended - s.started for s in samples if any(s.started < w.answered and s.ended > w.sent for w in swaps)]
    at_switch = [s.ended - s.started for s in samples if any(s.started <= w.answered <= s.ended for w in swaps)]
    return {
        "failed": sum(1 for s in samples if s.status != 200),
        "requests": len(samples),
        "steady": _stats(steady),
        "during_load": _stats(loading),
        "at_switch": _stats(at_switch),
    }


async def _run(workload: Workload, args: argparse.Namespace) -> dict[str, Any]:
    target = workload.checkpoint
    versions = [
        args.work_dir / f"hot-swap-{workload.name}-a.safetensors",
        args.work_dir / f"hot-swap-{workload.name}-b.safetensors",
    ]
    shutil.copy(target, versions[0])
    other_version(target, versions[1])
    opts = ServerOptions(
        threads=args.threads, max_batch_size=args.max_batch_size, extra_args=("--model-control", "--optimize", "off")
    )
    with serve("ours", workload, opts, args.work_dir / "logs") as server:
        base = f"http://127.0.0.1:{server.port}"
        profile = httpx.get(f"{base}/models/{workload.model_name}/profile", timeout=10).json()
        batch_ms = next(r["latency_ms"] for r in profile["batch_sizes"] if r["batch_size"] == profile["batch_cap"])
        samples: list[Sample] = []
        stop = asyncio.Event()
        clients = [
            asyncio.create_task(_client(server.predict_url, workload, samples, stop)) for _ in range(args.clients)
        ]
        swaps: list[Swap] = []
        async with httpx.AsyncClient(timeout=600) as control:
            await asyncio.sleep(args.warmup_s)
            samples.clear()  # warm-up requests are not counted
            for n in range(args.swaps):
                await asyncio.sleep(args.steady_s)
                temporary = target.with_name(f".{target.name}.tmp")
                shutil.copy(versions[(n + 1) % 2], temporary)
                temporary.replace(target)
                sent = time.monotonic()
                response = await control.post(f"{base}/models/{workload.model_name}/reload")
                answered = time.monotonic()
                seconds = response.json().get("seconds") if response.status_code == 200 else None
                swaps.append(Swap(sent, answered, response.status_code, seconds))
                print(f"  swap {n + 1}: {response.status_code} in {answered - sent:.2f} s ({seconds} s on the server)")
            await asyncio.sleep(args.steady_s)
        stop.set()
        await asyncio.gather(*clients)
    shutil.copy(versions[0], target)  # the workload's file as it was
    return {
        "workload": workload.name,
        "note": workload.note,
        "clients": args.clients,
        "batch_cap": profile["batch_cap"],
        "batch_ms_at_cap": batch_ms,
        "swaps": [asdict(s) | {"sent": round(s.sent - swaps[0].sent, 3)} for s in swaps],
        **analyse(samples, swaps),
    }


def markdown(result: dict[str, Any]) -> str:
    lines = [
        f"# Hot-swap under load: {result['workload']} ({date.today().isoformat()})",
        "",
        f"`python -m bench.hot_swap --workload {result['workload']} --clients {result['clients']} "
        f"--swaps {len(result['swaps'])}`: {result['note']}; one batch at the cap ({result['batch_cap']}) "
        f"takes {result['batch_ms_at_cap']:.1f} ms.",
        "",
        f"Requests: {result['requests']}, failed: **{result['failed']}**. Swaps: "
        + ", ".join(f"{s['status']} ({s['seconds']} s)" for s in result["swaps"]),
        "",
        "| requests | n | p50 ms | p99 ms | max ms |",
        "| --- | --- | --- | --- | --- |",
    ]
    for key, title in (
        ("steady", "steady"),
        ("during_load", "overlapping a load + check"),
        ("at_switch", "in flight at a switch"),
    ):
        s = result[key]
        lines.append(
            f"| {title} | {s['requests']} | {s.get('p50_ms', '-')} | {s.get('p99_ms', '-')} | {s.get('max_ms', '-')} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.hot_swap", description=__doc__.splitlines()[0])
    p.add_argument("--workload", choices=WORKLOADS, default="small")
    p.add_argument("--clients", type=int, default=8)
    p.add_argument("--swaps", type=int, default=3)
    p.add_argument("--steady-s", type=float, default=8.0)
    p.add_argument("--warmup-s", type=float, default=3.0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--max-batch-size", type=int, default=32)
    p.add_argument("--work-dir", type=Path, default=Path("/tmp/resnet-bench"))
    p.add_argument("--output-dir", type=Path, default=RESULTS)
    args = p.parse_args(argv)
    args.work_dir.mkdir(parents=True, exist_ok=True)
    workload = prepare_workload(args.workload, args.work_dir)
    result = asyncio.run(_run(workload, args))
    stem = args.output_dir / f"{date.today().isoformat()}-hot-swap-{args.workload}"
    write_json_and_markdown(result, stem, markdown(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
