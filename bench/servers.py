"""Start and stop one system's server process on a free loopback port, and wait until it is ready.

Every system gets the same checkpoint, device, precision and torch threads. Each runs in its own
session (process group), so stopping it also stops the worker processes it spawned (LitServe).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from bench import cpu
from bench.workloads import Workload

__all__ = ["SYSTEMS", "ServerOptions", "RunningServer", "free_port", "serve"]

#: system -> (ready path, request body format the system accepts)
SYSTEMS: dict[str, tuple[str, str]] = {
    "ours": ("/ready", "raw"),
    "fastapi": ("/health", "raw"),
    "litserve": ("/health", "json"),
    "floor": ("/health", "raw"),
}


@dataclass(frozen=True)
class ServerOptions:
    """What every system is started with."""

    device: str = "cpu"
    precision: str = "fp32"
    threads: int = 2
    max_batch_size: int = 32  # ours: the upper bound, autotuned down at warm-up
    peer_max_batch_size: int = 8
    peer_batch_timeout_ms: float = 5.0
    ready_timeout_s: float = 600.0
    cpus: tuple[int, ...] | None = None  # pin the server's process tree to these cores (--pin)
    processes: int | None = None  # ours: --processes (None: its default)
    extra_args: tuple[str, ...] = ()  # ours: more flags (bench.attacks)


@dataclass
class RunningServer:
    """A started server: its process, where to reach it, and how it takes images."""

    system: str
    process: subprocess.Popen[bytes]
    port: int
    request_format: str
    log_path: Path

    @property
    def pid(self) -> int:
        """The server's root process id."""
        return self.process.pid

    @property
    def predict_url(self) -> str:
        """The prediction endpoint."""
        return f"http://127.0.0.1:{self.port}/predict"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _command(system: str, workload: Workload, port: int, opts: ServerOptions) -> list[str]:
    if system == "ours":
        threads = max(1, opts.threads // (opts.processes or 1))  # the cores, shared among its processes
        return [
            *[sys.executable, "-m", "app"],
            *["--host", "127.0.0.1", "--port", str(port), "--weights-dir", str(workload.weights_dir)],
            *["--default-model", workload.model_name, "--device", opts.device, "--precision", opts.precision],
            *["--max-batch-size", str(opts.max_batch_size), "--log-level", "warning"],
            # On the CPU (one process unless given) its threads share the cores; elsewhere its defaults
            # divide them among its processes, and run the forward's torch on one thread.
            *(["--torch-threads", str(threads), "--workers", str(threads)] if opts.device == "cpu" else []),
            *(["--workers", str(threads)] if opts.device != "cpu" and opts.processes is not None else []),
            *(["--processes", str(opts.processes)] if opts.processes is not None else []),
            *opts.extra_args,
        ]
    if system == "floor":
        return [sys.executable, "-m", "bench.peers.floor", "--port", str(port)]
    module = {"fastapi": "bench.peers.plain_fastapi", "litserve": "bench.peers.litserve_app"}[system]
    return [
        *[sys.executable, "-m", module, "--checkpoint", str(workload.checkpoint), "--port", str(port)],
        *["--device", opts.device, "--precision", opts.precision, "--threads", str(opts.threads)],
        *["--max-batch-size", str(opts.peer_max_batch_size), "--batch-timeout-ms", str(opts.peer_batch_timeout_ms)],
    ]


def _ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
        return False


def stop(server: RunningServer, grace_s: float = 15.0) -> None:
    """SIGTERM to the server's process group, SIGKILL after ``grace_s``."""
    proc = server.process
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(grace_s)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)
    # Workers the root left behind (same process group) go too.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)


@contextlib.contextmanager
def serve(
    system: str, workload: Workload, opts: ServerOptions, log_dir: Path, source: Path | None = None
) -> Iterator[RunningServer]:
    """Run ``system`` serving ``workload`` until the block exits; raises if it never gets ready.

    ``source``: run the code of another checkout of this repository (``bench.ab``'s baseline) with
    this environment's packages; default: this checkout.
    """
    ready_path, request_format = SYSTEMS[system]
    port = free_port()
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"{system}-{workload.name}{'-' + source.name if source else ''}.log"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    if source is not None:
        env["PYTHONPATH"] = str(source)
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            _command(system, workload, port, opts),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            cwd=source or Path(__file__).resolve().parent.parent,
            start_new_session=True,
            preexec_fn=cpu.pin_child(opts.cpus),
        )
    server = RunningServer(system, proc, port, request_format, log_path)
    try:
        deadline = time.monotonic() + opts.ready_timeout_s
        while not _ready(f"http://127.0.0.1:{port}{ready_path}"):
            if proc.poll() is not None:
                tail = log_path.read_text(errors="replace")[-3000:]
                raise RuntimeError(f"{system} exited with {proc.returncode} before ready:\n{tail}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{system} not ready after {opts.ready_timeout_s:.0f} s (log: {log_path})")
            time.sleep(0.2)
        yield server
    finally:
        stop(server)
