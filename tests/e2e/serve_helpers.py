"""End-to-end helpers: training a checkpoint, running ``resnet-serve`` as a process, images, metrics."""

from __future__ import annotations

import fcntl
import io
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import httpx
import torch
from PIL import Image

REPO = Path(__file__).resolve().parents[2]
#: The shipped Fashion-MNIST ResNet-20, and the API key of the ``shipped_server`` fixture (tests/e2e/conftest.py).
SHIPPED = REPO / "weights" / "resnet20-fashion-mnist.safetensors"
SHIPPED_KEY = "secret"

T = TypeVar("T")


def wait_until(
    condition: Callable[[], T], timeout: float, what: str | Callable[[], str] = "condition", interval: float = 0.05
) -> T:
    """Poll ``condition`` every ``interval`` s until it returns something truthy, and return that.

    Raises ``TimeoutError`` (naming ``what``, or calling it for a description) if that takes longer than
    ``timeout`` s; exceptions from ``condition`` propagate. Tests wait on conditions this way, never on sleeps.
    """
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() >= deadline:
            raise TimeoutError(f"not within {timeout} s: {what() if callable(what) else what}")
        time.sleep(interval)


def train_checkpoint(output_dir: Path, name: str, arch: str, dataset: str = "synthetic", limit: int = 64) -> Path:
    """Run the real training entry point (one short epoch) and return the checkpoint it wrote."""
    from training.train import get_args_parser
    from training.train import main as train

    argv = ["--arch", arch, "--dataset", dataset, "--limit", str(limit), "--epochs", "1", "--batch-size", "32"]
    argv += ["--output-dir", str(output_dir), "--name", name, "--no-progress", "--device", "cpu"]
    argv += ["--data-dir", str(output_dir / "data")]  # never the repository's data/
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # small nets train faster on one thread, and CI shares its cores
    try:
        train(get_args_parser().parse_args(argv))
    finally:
        torch.set_num_threads(threads)
    return output_dir / f"{name}.safetensors"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ServerProcess:
    """``python -m app`` on a free loopback port, its log in a file."""

    def __init__(self, args: list[str], log_path: Path, env: dict[str, str] | None = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        command = [sys.executable, "-m", "app", "--host", "127.0.0.1", "--port", str(self.port), *args]
        full_env = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
        self._log = open(log_path, "wb")  # noqa: SIM115  (closed in stop())
        self.proc = subprocess.Popen(command, cwd=REPO, stdout=self._log, stderr=subprocess.STDOUT, env=full_env)

    def get(self, path: str, **kwargs) -> httpx.Response:
        return httpx.get(self.url + path, timeout=30, **kwargs)

    def wait_ready(self, timeout: float = 90.0) -> None:
        def ready() -> bool:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.log()}")
            try:
                return self.get("/ready").status_code == 200
            except httpx.TransportError:
                return False

        wait_until(ready, timeout, lambda: f"server ready:\n{self.log()}")

    def log(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    def records(self) -> list[dict[str, Any]]:
        """The JSON lines of the log, parsed (other lines, e.g. a crash's traceback, skipped)."""
        out = []
        for line in self.log().splitlines():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                continue
        return out

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        return self.proc.returncode


#: ``resnet-serve`` on the simulated GPU (``--device sim``), in one process (an accelerator's default is one per
#: core): the forward costs no CPU, its time is set by ``sim_env``.
SIM_ARGS = ["--device", "sim", "--precision", "fp16", "--torch-threads", "1", "--processes", "1"]


def sim_env(lock_path: Path, t0_ms: float | None = None, t1_ms: float | None = None) -> dict[str, str]:
    """The environment of a ``SIM_ARGS`` server: its own device (lock file) and, if given, its forward's timing."""
    env = {"RESNET_SERVE_SIM_LOCK_PATH": str(lock_path)}
    if t0_ms is not None:
        env["RESNET_SERVE_SIM_T0_MS"] = str(t0_ms)
    if t1_ms is not None:
        env["RESNET_SERVE_SIM_T1_MS"] = str(t1_ms)
    return env


@contextmanager
def device_held(lock_path: Path) -> Iterator[None]:
    """Hold a ``--device sim`` server's simulated device (its lock file): its forwards wait until the block ends."""
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def rss_bytes(server: ServerProcess) -> int:
    """The server process's resident memory (its own, not its children's)."""
    for line in Path(f"/proc/{server.proc.pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for process {server.proc.pid}")


def png_bytes(value: int = 128, size: tuple[int, int] = (28, 28), mode: str = "L") -> bytes:
    """A small solid PNG."""
    buf = io.BytesIO()
    Image.new(mode, size, value).save(buf, format="PNG")
    return buf.getvalue()


def metric_total(text: str, name: str, **labels: str) -> float:
    """Sum of the samples of ``name`` whose labels include ``labels``."""
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name) or line[len(name)] not in " {":
            continue
        if all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total
