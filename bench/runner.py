"""One benchmark run: per workload, the ceiling sweep, then each system's block.

A system's block: start the server and wait until ready; probe the in-process speed (server idle);
warm the server up with a short unrecorded load; one wrk point per concurrency level; probe again;
stop the server. Every served figure is then also given as a ratio to the mean of the two probes
around it, which cancels the machine's drift over minutes.
"""

from __future__ import annotations

import os
import platform
import socket
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from app.devices import load_engine_named
from app.engine import Engine
from bench import cpu, loadgen
from bench.ceiling import measure_ceiling, probe
from bench.request_path import measure_request_path
from bench.servers import ServerOptions, serve
from bench.sim_device import measure_simulated_device, projection
from bench.workloads import DEFAULT_SMALL_CHECKPOINT, prepare_workload

__all__ = ["RunConfig", "run", "machine_info", "other_work"]


@dataclass
class RunConfig:
    """Everything one run measures; the CLI fills it."""

    workloads: list[str] = field(default_factory=lambda: ["large", "small"])
    systems: list[str] = field(default_factory=lambda: ["ours", "fastapi", "litserve"])
    concurrency: list[int] = field(default_factory=lambda: [1, 8, 32, 64])
    duration_s: float = 15.0
    warmup_s: float = 3.0
    batch_sizes: list[int] = field(default_factory=lambda: [1, 2, 4, 8, 16, 32, 64])
    ceiling_s: float = 3.0
    probe_s: float = 2.5
    ceiling: bool = True
    serve: bool = True
    device: str = "cpu"
    precision: str = "fp32"
    threads: int = field(default_factory=lambda: len(os.sched_getaffinity(0)))
    max_batch_size: int = 32
    processes: int | None = None  # ours: --processes (None: its default)
    peer_max_batch_size: int = 8
    peer_batch_timeout_ms: float = 5.0
    request_format: str = "native"  # native: each system's own; or raw / multipart (LitServe: always JSON)
    small_checkpoint: Path = DEFAULT_SMALL_CHECKPOINT
    work_dir: Path = Path("/tmp/resnet-serve-bench")
    pin: bool = False  # server (and the in-process ceiling) on the first core, wrk on the others
    simulated: bool = True  # also: the request path on one pinned core, and the simulated-device table
    sim_processes: list[int] = field(default_factory=lambda: sorted({1, len(os.sched_getaffinity(0))}))


def other_work() -> list[str]:
    """Command lines of training jobs running now (their presence makes figures invalid)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) != os.getpid():
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    cmd = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
            except OSError:
                continue
            if "resnet-train" in cmd or "torchrun" in cmd:
                found.append(cmd[:200])
    return found


def machine_info(config: RunConfig) -> dict[str, Any]:
    """Host, CPU, accelerator, software versions and the command, for the results file."""
    model = next(
        (ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines() if "model name" in ln),
        platform.processor(),
    )
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    except OSError:
        commit = ""
    gpu = torch.cuda.get_device_name(0) if config.device.startswith("cuda") and torch.cuda.is_available() else None
    return {
        "host": socket.gethostname(),
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "cpu": model,
        "cores": len(os.sched_getaffinity(0)),
        "gpu": gpu,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "commit": commit,
        "command": " ".join(["python -m bench", *sys.argv[1:]]),
        "training_running": other_work(),
    }


def _format(system: str, native: str, choice: str) -> str:
    return native if choice == "native" or native == "json" else choice


def _system_block(
    system: str,
    workload: Any,
    model: Engine,
    best_batch: int,
    config: RunConfig,
    cores: tuple[tuple[int, ...], tuple[int, ...]] | None,
) -> dict[str, Any]:
    server_cpus, wrk_cpus = cores if cores is not None else (None, None)
    opts = ServerOptions(
        device=config.device,
        precision=config.precision,
        threads=config.threads,
        max_batch_size=config.max_batch_size,
        processes=config.processes,
        peer_max_batch_size=config.peer_max_batch_size,
        peer_batch_timeout_ms=config.peer_batch_timeout_ms,
        cpus=server_cpus,
    )
    started = time.monotonic()
    with serve(system, workload, opts, config.work_dir / "logs") as server:
        startup_s = time.monotonic() - started
        fmt = _format(system, server.request_format, config.request_format)
        if fmt == "multipart":
            body, content_type = loadgen.multipart_body(workload.image, workload.content_type)
        elif fmt == "json":
            body, content_type = loadgen.json_body(workload.image), "application/json"
        else:
            body, content_type = workload.image, workload.content_type
        body_file = config.work_dir / f"body-{workload.name}-{fmt}.bin"
        body_file.write_bytes(body)
        tree = cpu.process_tree(server.pid)
        idle_before = cpu.snapshot(tree, None)
        before = probe(model, workload.image, best_batch, config.probe_s)
        idle_cpu = cpu.usage(idle_before, cpu.snapshot(tree, None))
        print(
            f"  {system}: ready in {startup_s:.1f} s; probe {before.images_per_s:.1f} img/s, "
            f"{before.latency_ms:.2f} ms; idle server {idle_cpu.server:.2f} cores"
        )
        url = server.predict_url
        if config.warmup_s > 0:
            loadgen.run_point(url, body_file, content_type, 8, config.warmup_s, server.pid, cpus=wrk_cpus)
        points = []
        for level in config.concurrency:
            point = loadgen.run_point(url, body_file, content_type, level, config.duration_s, server.pid, cpus=wrk_cpus)
            print(
                f"    c={level:3d}: {point.throughput:8.1f} req/s  p50 {point.latency_ms['p50']:8.2f}  "
                f"p99 {point.latency_ms['p99']:8.2f} ms  errors {point.errors}  cores: server {point.cpu.server:.2f} "
                f"wrk {point.cpu.loadgen:.2f} other {point.cpu.other:.2f}  server CPU/request "
                f"{point.server_cpu_us_per_request:.0f} us"
            )
            points.append(point.to_dict())
            loadgen.wait_quiet(server.pid)  # before the next point, and before the probe after
        after = probe(model, workload.image, best_batch, config.probe_s)
    mean_ips = statistics.mean([before.images_per_s, after.images_per_s])
    mean_lat = statistics.mean([before.latency_ms, after.latency_ms])
    for p in points:
        p["ratio_to_probe"] = round(p["throughput"] / mean_ips, 3)
        p["p50_minus_probe_latency_ms"] = round(p["latency_ms"]["p50"] - mean_lat, 3)
    print(f"  {system}: probe after {after.images_per_s:.1f} img/s, {after.latency_ms:.2f} ms")
    return {
        "request_format": fmt,
        "startup_s": round(startup_s, 2),
        "idle_cpu": asdict(idle_cpu),
        "probes": [asdict(before), asdict(after)],
        "probe_images_per_s": round(mean_ips, 3),
        "probe_latency_ms": round(mean_lat, 3),
        "points": points,
    }


def run(config: RunConfig) -> dict[str, Any]:
    """Measure everything ``config`` asks for; returns the results document (see ``bench.report``)."""
    config.work_dir.mkdir(parents=True, exist_ok=True)
    all_cores = os.sched_getaffinity(0)
    cores = cpu.pin_plan() if config.pin else None
    if cores is not None:
        # The in-process ceiling and probes get what each server gets: its core(s), one torch thread each.
        os.sched_setaffinity(0, cores[0])
        config = replace(config, threads=len(cores[0]))
        print(f"pinned: servers and the in-process ceiling on cores {cores[0]}, wrk on {cores[1]}")
    torch.set_num_threads(max(1, config.threads))
    results: dict[str, Any] = {
        "machine": machine_info(config),
        "config": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(config).items()},
        "workloads": {},
    }
    for name in config.workloads:
        workload = prepare_workload(name, config.work_dir, config.small_checkpoint)
        print(f"== {name}: {workload.note} ({len(workload.image)} byte {workload.content_type})")
        model = load_engine_named(workload.checkpoint, config.device, precision=config.precision)
        entry: dict[str, Any] = {"note": workload.note, "image_bytes": len(workload.image), "systems": {}}
        best_batch = 1
        if config.ceiling:
            ceiling = measure_ceiling(model, workload.image, config.batch_sizes, config.ceiling_s)
            entry["ceiling"] = ceiling.to_dict()
            best_batch = ceiling.best_batch_size
        if config.serve:
            for system in config.systems:
                entry["systems"][system] = _system_block(system, workload, model, best_batch, config, cores)
        for block in entry["systems"].values():
            if "ceiling" in entry:
                for p in block["points"]:
                    p["ratio_to_ceiling"] = round(p["throughput"] / entry["ceiling"]["best_images_per_s"], 3)
        results["workloads"][name] = entry
        del model
    if config.serve and config.simulated and config.device == "cpu":
        os.sched_setaffinity(0, all_cores)  # these sections pin (or spread) their servers themselves
        _simulated_sections(config, results)
    results["machine"]["training_running_at_end"] = other_work()
    return results


def _simulated_sections(config: RunConfig, results: dict[str, Any]) -> None:
    """The GPU case without a GPU: the request path against the floor, and the simulated-device table."""
    opts = ServerOptions(threads=config.threads, max_batch_size=config.max_batch_size)
    if len(os.sched_getaffinity(0)) >= 2:
        print("== request path: ours on the simulated device vs the bare ASGI floor, one pinned core")
        small = prepare_workload("small", config.work_dir, config.small_checkpoint)
        results["request_path"] = measure_request_path(
            small, opts, config.work_dir, seconds=config.duration_s / 2, warmup_s=config.warmup_s
        )
    results["simulated_device"] = {}
    for name in config.workloads:
        workload = prepare_workload(name, config.work_dir, config.small_checkpoint)
        print(f"== simulated device: {workload.note}")
        section = measure_simulated_device(
            workload,
            opts,
            config.work_dir,
            processes=config.sim_processes,
            seconds=config.duration_s,
            warmup_s=config.warmup_s,
        )
        best = min(section["points"], key=lambda p: p["cpu_us_per_request"])
        section["projection"] = projection(best["cpu_us_per_request"])
        results["simulated_device"][name] = section
