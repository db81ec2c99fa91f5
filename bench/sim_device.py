"""The GPU case, measured without a GPU: our server feeding the simulated device (``--device sim``).

The simulated device (``app.simulated``) takes a forward's wall time from published fp16 ResNet-50
figures and uses no CPU, so what limits the served rate here is the host: the CPU each request costs
before and after the forward. Per workload this measures the device's ceiling (forward-only
throughput at the batch sizes the server may form), then our server at c=64 and c=256 for each
``--processes`` choice: the served rate against that ceiling, the server's CPU per request, and the
cores a front end needs to keep the device 80% busy (0.8 x ceiling x CPU per request). The projection
gives, per workload, the cores needed to feed devices of 5k, 10k and 20k images/s.
"""

from __future__ import annotations

import statistics
from dataclasses import replace
from pathlib import Path
from typing import Any

from app.devices import load_engine_named
from app.engine import candidate_batch_sizes
from bench import loadgen
from bench.ceiling import timed
from bench.servers import ServerOptions, serve
from bench.workloads import Workload

__all__ = ["DEVICE_RATES", "measure_simulated_device", "projection"]

#: Device throughputs (images/s) the projection sizes a front end for.
DEVICE_RATES = (5_000, 10_000, 20_000)
#: Busy fraction of the device the front end must sustain.
TARGET_BUSY = 0.8


def device_ceiling(workload: Workload, max_batch_size: int, seconds: float = 0.5) -> dict[str, Any]:
    """Forward-only images/s of the simulated device at each batch size up to ``max_batch_size``."""
    engine = load_engine_named(workload.checkpoint, "sim", precision="fp16")
    per_batch = {}
    for size in candidate_batch_sizes(max_batch_size):
        batch = engine.blank_batch(size)
        per_batch[size] = round(size / statistics.median(timed(lambda b=batch: engine.predict(b), seconds)), 1)
    best = max(per_batch, key=lambda size: per_batch[size])
    return {"images_per_s": per_batch, "best_batch_size": best, "best_images_per_s": per_batch[best]}


def measure_simulated_device(
    workload: Workload,
    opts: ServerOptions,
    work_dir: Path,
    *,
    processes: list[int],
    levels: tuple[int, ...] = (64, 256),
    seconds: float = 10.0,
    warmup_s: float = 3.0,
) -> dict[str, Any]:
    """The device's ceiling, then a served point per ``processes`` choice and concurrency ``levels``.

    c=64 is the goal's level; at c=256 there are enough requests in flight for the front end's CPU, not
    the round trips, to bound the rate, which shows what more processes buy.
    """
    ceiling = device_ceiling(workload, opts.max_batch_size)
    best = ceiling["best_images_per_s"]
    print(f"  simulated device: {best:.0f} img/s at batch {ceiling['best_batch_size']} (forward only)")
    body = work_dir / f"body-{workload.name}-raw.bin"
    body.write_bytes(workload.image)
    rows = []
    for count in processes:
        options = replace(opts, device="sim", precision="fp16", processes=count)
        with serve("ours", workload, options, work_dir / "logs") as server:
            url, kind = server.predict_url, workload.content_type
            loadgen.warm_up(url, body, kind, levels[0], warmup_s, server.pid)
            for level in levels:
                point = loadgen.run_point(url, body, kind, level, seconds, server.pid)
                loadgen.wait_quiet(server.pid)
                row = _row(count, level, point, best)
                rows.append(row)
                print(
                    f"    processes {count} c={level}: {row['throughput']:.0f} req/s = "
                    f"{row['ratio_to_ceiling']:.2f}x the device, {row['cpu_us_per_request']:.0f} us CPU/request, "
                    f"{row['server_cores']:.2f} cores; {row['cores_for_80_percent']:.1f} cores would keep it 80% busy"
                )
    return {"workload": workload.name, "note": workload.note, "ceiling": ceiling, "points": rows}


def _row(processes: int, level: int, point: loadgen.LoadPoint, ceiling: float) -> dict[str, Any]:
    return {
        "processes": processes,
        "concurrency": level,
        "throughput": round(point.throughput, 1),
        "ratio_to_ceiling": round(point.throughput / ceiling, 3),
        "p50_ms": point.latency_ms["p50"],
        "p99_ms": point.latency_ms["p99"],
        "errors": point.errors,
        "server_cores": point.cpu.server,
        "other_cores": point.cpu.other,
        "cpu_us_per_request": point.server_cpu_us_per_request,
        "cores_for_80_percent": round(TARGET_BUSY * ceiling * point.server_cpu_us_per_request / 1e6, 2),
    }


def projection(cpu_us_per_request: float, images_per_request: int = 1) -> dict[str, Any]:
    """Requests one core serves, and the cores needed to feed each of ``DEVICE_RATES`` images/s."""
    per_image_s = cpu_us_per_request / 1e6 / images_per_request
    return {
        "cpu_us_per_request": round(cpu_us_per_request, 1),
        "requests_per_core": round(1 / per_image_s / images_per_request),
        "cores": {rate: round(rate * per_image_s, 1) for rate in DEVICE_RATES},
    }
