"""``python -m bench.attacks``: the hardening issue's attacks on a real server, with the figures that matter.

Each attack is bounded and runs on loopback against our server (the small workload, on the CPU), started
from this checkout or, with ``--source DIR``, from another checkout (``git archive COMMIT | tar -x -C DIR``)
to measure before and after in the same minutes. Per attack it reports what the attacker got (statuses),
the server's peak RSS growth and CPU seconds, ``/health`` latency while it ran, and how long the server
kept the attacker's connections:

- ``slow-uploads``: 100 connections each send 8 MB of a declared 8.5 MB raw body, then stall.
- ``slowloris``: a connection that sends half its headers, then nothing.
- ``text-chunks``: 200 POSTs, 8 at a time, of a 28x28 PNG carrying 60 zTXt chunks of 1 MB inflated each.
- ``decode-bombs``: 4 ``/predict/batch`` requests of 16 PNGs of 6400x6250 pixels in a 2-colour palette.

``--server-args`` adds flags for the server (e.g. a byte budget the older code does not know).
``tests/e2e/test_attacks.py`` builds the same attacks from here and asserts the bounds.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import shlex
import socket
import statistics
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from PIL import Image, PngImagePlugin

from bench.cpu import process_tree
from bench.server_stats import rss_mb
from bench.servers import RunningServer, ServerOptions, serve
from bench.workloads import prepare_workload

__all__ = ["ATTACKS", "palette_bomb", "stalled_upload", "text_chunk_png", "main"]

MB = 1_048_576


def text_chunk_png() -> bytes:
    """28x28 pixels carrying 60 zTXt chunks that inflate to 1 MB each (within Pillow's default limits)."""
    info = PngImagePlugin.PngInfo()
    for i in range(60):
        info.add_text(f"k{i}", "x" * 1_000_000, zip=True)
    buffer = io.BytesIO()
    Image.new("L", (28, 28), 128).save(buffer, "PNG", pnginfo=info)
    return buffer.getvalue()


def palette_bomb() -> bytes:
    """6400x6250 pixels (40 megapixels) of a 2-colour palette: a few kilobytes of PNG."""
    image = Image.new("P", (6400, 6250))
    image.putpalette([0, 0, 0, 255, 255, 255])
    buffer = io.BytesIO()
    image.save(buffer, "PNG", bits=1, optimize=True)
    return buffer.getvalue()


async def stalled_upload(port: int, declared: int, sent: int, wait_s: float = 60) -> tuple[bytes, float]:
    """Declare ``declared`` bytes, send ``sent``, then nothing: the server's answer (``b""`` if it reset the
    connection first) and how long it kept the connection after the last byte sent (at most ``wait_s``)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    head = f"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\nContent-Length: {declared}\r\n\r\n"
    writer.write(head.encode())
    chunk = b"\0" * (256 * 1024)
    try:
        for _ in range(sent // len(chunk)):
            writer.write(chunk)
            await asyncio.wait_for(writer.drain(), 30)
    except (OSError, TimeoutError):
        pass  # the server answered and closed while we were still sending
    stalled_at = time.monotonic()
    answer = b""
    try:
        async with asyncio.timeout(wait_s):
            while data := await reader.read(65536):
                answer += data
    except (OSError, TimeoutError):
        pass
    writer.close()
    return answer, time.monotonic() - stalled_at


def status_of(answer: bytes) -> str:
    """The status code of a raw HTTP answer, or ``reset`` when none arrived."""
    return answer.split(b" ", 2)[1].decode() if answer.startswith(b"HTTP/1.1 ") else "reset"


@dataclass
class Figures:
    """What one attack did to the server."""

    statuses: Counter[str] = field(default_factory=Counter)
    rss_growth_mb: float = 0.0
    cpu_s: float = 0.0
    health_ms: list[float] = field(default_factory=list)
    held_s: list[float] = field(default_factory=list)

    def row(self, name: str) -> str:
        health = f"{statistics.median(self.health_ms):.0f} / {max(self.health_ms):.0f}" if self.health_ms else "-"
        held = f"{statistics.median(self.held_s):.1f} / {max(self.held_s):.1f}" if self.held_s else "-"
        statuses = ", ".join(f"{status} x{count}" for status, count in sorted(self.statuses.items()))
        return f"| {name} | {statuses} | {self.rss_growth_mb:.0f} | {self.cpu_s:.2f} | {health} | {held} |"


def _cpu_s(pids: list[int]) -> float:
    ticks = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        ticks += int(fields[11]) + int(fields[12])  # utime, stime
    return ticks / 100


@contextmanager
def observed(server: RunningServer, figures: Figures) -> Iterator[None]:
    """Samples the server's RSS every 10 ms and times ``/health`` every 20 ms while the block runs."""
    pids = process_tree(server.pid)
    base_rss, base_cpu = rss_mb(pids), _cpu_s(pids)
    peak = [base_rss]
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.01):
            peak.append(rss_mb(pids))

    def probe() -> None:  # every 20 ms, as a monitor would, not back to back: its own CPU stays small
        with httpx.Client(base_url=f"http://127.0.0.1:{server.port}", timeout=60) as client:
            while not done.wait(0.02):
                started = time.perf_counter()
                client.get("/health")
                figures.health_ms.append((time.perf_counter() - started) * 1000)

    threads = [threading.Thread(target=target, daemon=True) for target in (sample, probe)]
    for thread in threads:
        thread.start()
    try:
        yield
    finally:
        done.set()
        for thread in threads:
            thread.join()
        figures.rss_growth_mb = (max(peak) - base_rss) * 1e6 / MB
        figures.cpu_s = _cpu_s(pids) - base_cpu


def slow_uploads(server: RunningServer) -> Figures:
    figures = Figures()

    async def attack() -> list[tuple[bytes, float]]:
        return await asyncio.gather(*(stalled_upload(server.port, int(8.5 * MB), 8 * MB) for _ in range(100)))

    with observed(server, figures):
        answers = asyncio.run(attack())
    figures.statuses.update(status_of(answer) for answer, _ in answers)
    figures.held_s = [held for _, held in answers]
    return figures


def slowloris(server: RunningServer) -> Figures:
    figures = Figures()
    with observed(server, figures), socket.create_connection(("127.0.0.1", server.port), timeout=60) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n")
        started = time.monotonic()
        try:
            closed = sock.recv(1) == b""
        except TimeoutError:
            closed = False
        figures.held_s = [time.monotonic() - started]
        figures.statuses["closed" if closed else "open after 60 s"] += 1
    return figures


def text_chunks(server: RunningServer) -> Figures:
    figures, payload = Figures(), text_chunk_png()

    def post(_: int) -> str:
        with httpx.Client(timeout=120) as client:
            return str(
                client.post(server.predict_url, content=payload, headers={"content-type": "image/png"}).status_code
            )

    with observed(server, figures), ThreadPoolExecutor(8) as pool:
        figures.statuses.update(pool.map(post, range(200)))
    return figures


def decode_bombs(server: RunningServer) -> Figures:
    figures, bomb = Figures(), palette_bomb()
    files = [("files", (f"{i}.png", bomb, "image/png")) for i in range(16)]
    with observed(server, figures), httpx.Client(timeout=300) as client:
        for _ in range(4):
            figures.statuses[str(client.post(server.predict_url + "/batch", files=files).status_code)] += 1
    return figures


ATTACKS: dict[str, Callable[[RunningServer], Figures]] = {
    "slow-uploads": slow_uploads,
    "slowloris": slowloris,
    "text-chunks": text_chunks,
    "decode-bombs": decode_bombs,
}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.attacks", description=__doc__.split("\n\n")[0])
    p.add_argument("--source", type=Path, help="run the server from this checkout (default: this one)")
    p.add_argument("--server-args", default="", help="extra resnet-serve flags, one shell-quoted string")
    p.add_argument("--attacks", default=",".join(ATTACKS), help=f"comma-separated, of {','.join(ATTACKS)}")
    p.add_argument("--work-dir", type=Path, default=Path("bench/results/tmp"))
    args = p.parse_args(argv)
    workload = prepare_workload("small", args.work_dir.resolve())  # absolute: the server may run elsewhere
    opts = ServerOptions(extra_args=tuple(shlex.split(args.server_args)))
    print(f"source: {args.source or 'this checkout'}; server flags: {args.server_args or 'none'}")
    print("| attack | statuses | peak RSS growth, MiB | server CPU, s | /health p50 / max, ms | held p50 / max, s |")
    print("| --- | --- | ---: | ---: | ---: | ---: |")
    for name in args.attacks.split(","):
        with serve("ours", workload, opts, args.work_dir / "logs", source=args.source) as server:
            print(ATTACKS[name](server).row(name), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
