"""What a request costs us beyond HTTP: our server's CPU per request over the bare ASGI floor's, one pinned core.

Our server runs the small workload on the simulated device (``--device sim``), so the forward costs no
CPU and what is measured is the request path alone: HTTP, routing, reading the body, decoding, batching,
metrics, JSON. The floor (``bench.peers.floor``) reads the body and answers fixed JSON on the same
uvicorn. Each runs on the first core with wrk on the others (``--pin``), in alternating rounds, and the
ratio is the median of the per-round ratios, so both sides see the same minutes of the machine.
"""

from __future__ import annotations

import statistics
from dataclasses import replace
from pathlib import Path
from typing import Any

from bench import cpu, loadgen
from bench.servers import ServerOptions, serve
from bench.workloads import Workload

__all__ = ["measure_request_path"]


def _point(
    system: str, workload: Workload, opts: ServerOptions, body: Path, level: int, seconds: float, warmup_s: float
) -> Any:
    wrk_cpus = cpu.pin_plan()[1]
    with serve(system, workload, opts, body.parent / "logs") as server:
        url, kind = server.predict_url, workload.content_type
        loadgen.warm_up(url, body, kind, level, warmup_s, server.pid, cpus=wrk_cpus)
        return loadgen.run_point(url, body, kind, level, seconds, server.pid, cpus=wrk_cpus)


def measure_request_path(
    workload: Workload,
    opts: ServerOptions,
    work_dir: Path,
    *,
    level: int = 64,
    seconds: float = 8.0,
    warmup_s: float = 2.0,
    rounds: int = 2,
) -> dict[str, Any]:
    """Rounds of (ours on the simulated device, floor) on one pinned core; per-round figures and the median ratio."""
    body = work_dir / f"body-{workload.name}-raw.bin"
    body.write_bytes(workload.image)
    pinned = replace(opts, device="sim", precision="fp16", processes=1, threads=1, cpus=cpu.pin_plan()[0])
    per_round = []
    for i in range(rounds):
        order = ["ours", "floor"] if i % 2 == 0 else ["floor", "ours"]
        points = {system: _point(system, workload, pinned, body, level, seconds, warmup_s) for system in order}
        ours, floor = points["ours"], points["floor"]
        per_round.append(
            {
                "ours_throughput": round(ours.throughput, 1),
                "ours_cpu_us_per_request": ours.server_cpu_us_per_request,
                "floor_throughput": round(floor.throughput, 1),
                "floor_cpu_us_per_request": floor.server_cpu_us_per_request,
                "ratio": round(ours.server_cpu_us_per_request / floor.server_cpu_us_per_request, 2),
                "other_cores": max(ours.cpu.other, floor.cpu.other),
            }
        )
        print(
            f"  round {i + 1}: ours {ours.throughput:.0f} req/s {ours.server_cpu_us_per_request:.0f} us/req, "
            f"floor {floor.throughput:.0f} req/s {floor.server_cpu_us_per_request:.0f} us/req -> "
            f"{per_round[-1]['ratio']:.2f}x"
        )
    return {
        "workload": workload.name,
        "concurrency": level,
        "rounds": per_round,
        "ratio": statistics.median(r["ratio"] for r in per_round),
        "ours_cpu_us_per_request": statistics.median(r["ours_cpu_us_per_request"] for r in per_round),
        "floor_cpu_us_per_request": statistics.median(r["floor_cpu_us_per_request"] for r in per_round),
    }
