"""The load generator: ``wrk`` (a compiled, event-driven client) with ``post_image.lua``.

One call is one point: fixed concurrency (open connections, each sending its next request as soon as
the last one is answered), fixed duration. Throughput, p50/p90/p99 latency and errors come from
wrk's own counters via the Lua ``done()`` callback; CPU used by wrk comes from its rusage, by the
server from /proc over the same interval.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path

from bench import cpu

__all__ = ["LUA_SCRIPT", "LoadPoint", "find_wrk", "json_body", "multipart_body", "run_point", "wait_quiet", "warm_up"]

LUA_SCRIPT = Path(__file__).with_name("post_image.lua")
MARKER = "BENCH_JSON "


class LoadGenError(RuntimeError):
    """wrk is missing or its run produced no result."""


def find_wrk() -> str | None:
    """Path of the ``wrk`` binary, or ``None`` (install it with ``apt-get install wrk``)."""
    return shutil.which("wrk")


def multipart_body(image: bytes, content_type: str, field: str = "file") -> tuple[bytes, str]:
    """A multipart/form-data body with one file part, and its Content-Type header value."""
    boundary = uuid.uuid4().hex
    ext = content_type.split("/")[-1]
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="{field}"; filename="image.{ext}"\r\n'
        f"Content-Type: {content_type}\r\n\r\n"
    ).encode()
    return head + image + f"\r\n--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def json_body(image: bytes) -> bytes:
    """``{"image": "<base64>"}``: how LitServe's examples take an image."""
    return json.dumps({"image": base64.b64encode(image).decode()}).encode()


@dataclass
class LoadPoint:
    """One concurrency level against one server."""

    concurrency: int
    duration_s: float
    requests: int
    errors: int
    error_detail: dict[str, int]
    throughput: float  # successful responses per second
    latency_ms: dict[str, float]
    cpu: cpu.CpuUsage
    server_cpu_us_per_request: float  # the server's CPU time per answered request, in microseconds

    def to_dict(self) -> dict[str, object]:
        """A JSON-ready dict."""
        return asdict(self)


def run_point(
    url: str,
    body_file: Path,
    content_type: str,
    concurrency: int,
    duration_s: float,
    server_pid: int,
    timeout_s: float = 60.0,
    threads: int = 1,
    cpus: tuple[int, ...] | None = None,
) -> LoadPoint:
    """Drive ``url`` with ``concurrency`` connections for ``duration_s`` seconds; ``url`` is the full endpoint.

    ``cpus``: run wrk on these cores only (``--pin``: apart from the server's).
    """
    wrk = find_wrk()
    if wrk is None:
        raise LoadGenError("wrk not found: apt-get install -y wrk")
    base, _, path = url.partition("://")[2].partition("/")
    cmd = [
        wrk,
        f"-t{min(threads, concurrency)}",
        f"-c{concurrency}",
        f"-d{max(1, round(duration_s))}s",
        f"--timeout={max(1, round(timeout_s))}s",
        "-s",
        str(LUA_SCRIPT),
        f"http://{base}",
        "--",
        str(body_file),
        content_type,
        "/" + path,
    ]
    server_pids = cpu.process_tree(server_pid)
    before = cpu.snapshot(server_pids, None)
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, preexec_fn=cpu.pin_child(cpus)
    )
    assert proc.stdout is not None
    out = proc.stdout.read()  # EOF when wrk exits; reap it ourselves to get its rusage
    after = cpu.snapshot(server_pids, None)
    _, status, rusage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    proc.stdout.close()
    usage = cpu.usage(before, after)
    usage.loadgen = round((rusage.ru_utime + rusage.ru_stime) / max(after.wall - before.wall, 1e-9), 3)
    usage.other = round(max(usage.total - usage.server - usage.loadgen - usage.harness, 0.0), 3)
    line = next((ln for ln in out.splitlines() if ln.startswith(MARKER)), None)
    if proc.returncode != 0 or line is None:
        raise LoadGenError(f"wrk failed (exit {proc.returncode}): {out.strip()}")
    data = json.loads(line[len(MARKER) :])
    seconds = data["duration_us"] / 1e6
    errors = sum(data["errors"].values())
    ok = max(data["requests"] - data["errors"]["status"], 0)
    lat = {k: round(v / 1000, 3) for k, v in data["latency_us"].items()}
    throughput = ok / seconds
    per_request = round(usage.server / throughput * 1e6, 1) if throughput > 0 else float("nan")
    return LoadPoint(
        concurrency, round(seconds, 3), data["requests"], errors, data["errors"], throughput, lat, usage, per_request
    )


def warm_up(
    url: str,
    body_file: Path,
    content_type: str,
    concurrency: int,
    duration_s: float,
    server_pid: int,
    cpus: tuple[int, ...] | None = None,
) -> None:
    """Unrecorded load for ``duration_s`` (none when 0), then ``wait_quiet``: a server ready to be measured."""
    if duration_s > 0:
        run_point(url, body_file, content_type, concurrency, duration_s, server_pid, cpus=cpus)
        wait_quiet(server_pid)


def wait_quiet(server_pid: int, *, idle_cores: float = 0.25, window_s: float = 0.25, timeout_s: float = 60.0) -> float:
    """Wait until the server has worked off what the last point left queued; returns the seconds waited.

    When wrk stops, a server under load still holds up to ``concurrency`` accepted requests (1.5 s of
    forwards for ResNet-50 at 64). Until its CPU use falls below ``idle_cores`` it would slow the next
    point, and a probe taken meanwhile would understate the machine and flatter every ratio to it.
    """
    tree = cpu.process_tree(server_pid)
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        before = cpu.snapshot(tree, None)
        time.sleep(window_s)
        if cpu.usage(before, cpu.snapshot(tree, None)).server < idle_cores:
            break
    return time.monotonic() - started
