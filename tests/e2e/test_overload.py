"""Overload (503 + Retry-After), deadline (504), twice the capacity and SIGTERM under it, on real servers."""

from __future__ import annotations

import asyncio
import signal
import statistics
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import httpx
from serve_helpers import SIM_ARGS, device_held, png_bytes, rss_bytes, sim_env


def test_full_queue_answers_503_with_retry_after_and_stays_ready(start_server, weights_dir: Path) -> None:
    args = ["--weights-dir", str(weights_dir), "--max-batch-size", "1", "--max-queue", "1", "--torch-threads", "1"]
    server = start_server([*args, "--max-batch-files", "64"])
    server.wait_ready()
    files = [("files", (f"{i}.png", png_bytes(i), "image/png")) for i in range(64)]
    with httpx.Client(base_url=server.url, timeout=60) as c:
        # 64 tiny images (decoded inline) are all queued in one turn of the event loop, before the batcher
        # takes the first: the queue of one overflows at the second, however fast the model is.
        r = c.post("/predict/batch", files=files)
        assert r.status_code == 503, r.text
        assert r.headers["retry-after"] == "1"
        assert "queued" in r.json()["detail"]
        assert c.get("/ready").status_code == 200
        assert c.post("/predict", files={"file": ("a.png", png_bytes(), "image/png")}).status_code == 200


def test_deadline_answers_504(start_server, weights_dir: Path, tmp_path: Path) -> None:
    lock = tmp_path / "lock"
    server = start_server([*sim_args(weights_dir), "--timeout-s", "0.5"], env=sim_env(lock, 50, 0))
    server.wait_ready()
    with device_held(lock):  # the request's batch waits for the device past its deadline
        r = httpx.post(server.url + "/predict", files={"file": ("a.png", png_bytes(), "image/png")}, timeout=30)
    assert r.status_code == 504
    assert "deadline" in r.json()["detail"]
    assert server.get("/ready").status_code == 200


# --- overload at twice the capacity, and SIGTERM under it ------------------------------------------


@dataclass
class Outcome:
    """One request of an open-loop load: its status (0: no HTTP answer), latency and answer."""

    status: int
    latency_s: float
    body: dict | None = None
    error: str = ""


async def open_loop(url: str, rate: float, seconds: float, image: bytes) -> list[Outcome]:
    """``rate`` requests per second for ``seconds``, each sent on schedule whatever the earlier ones do."""
    limits = httpx.Limits(max_connections=1000, max_keepalive_connections=1000)
    async with httpx.AsyncClient(base_url=url, timeout=30, limits=limits) as client:

        async def one(at: float) -> Outcome:
            await asyncio.sleep(max(0.0, at - time.monotonic()))  # the schedule of an open-loop load, not a wait
            started = time.monotonic()
            try:
                r = await client.post("/predict?model=alpha", content=image, headers={"content-type": "image/png"})
            except httpx.TransportError as exc:
                return Outcome(0, time.monotonic() - started, error=type(exc).__name__)
            body = r.json() if r.headers.get("content-type") == "application/json" else None
            return Outcome(r.status_code, time.monotonic() - started, body)

        start = time.monotonic() + 0.1
        return await asyncio.gather(*(one(start + i / rate) for i in range(int(rate * seconds))))


def sim_args(weights_dir: Path) -> list[str]:
    """With ``sim_env(lock, 50, 0)``: a device of 40 images/s (50 ms a forward of at most 2), a short queue and
    deadline."""
    limits = ["--max-batch-size", "2", "--max-queue", "8", "--timeout-s", "2"]
    return ["--weights-dir", str(weights_dir), *SIM_ARGS, *limits]


def test_twice_the_capacity_gets_correct_answers_or_fast_503s_and_recovers(
    start_server, weights_dir: Path, tmp_path: Path
) -> None:
    server = start_server(sim_args(weights_dir), env=sim_env(tmp_path / "lock", 50, 0))
    server.wait_ready()
    image = png_bytes(77)
    expected = httpx.post(server.url + "/predict?model=alpha", content=image, headers={"content-type": "image/png"})
    rss_before = rss_bytes(server)
    outcomes = asyncio.run(open_loop(server.url, rate=80, seconds=8, image=image))  # capacity: 40/s
    rss_after = rss_bytes(server)
    statuses = Counter(o.status for o in outcomes)
    assert set(statuses) <= {200, 503}, statuses
    ok = [o for o in outcomes if o.status == 200]
    refused = [o for o in outcomes if o.status == 503]
    assert all(o.body == expected.json() for o in ok)  # every accepted request: the right answer
    assert max(o.latency_s for o in ok) <= 2.0 + 0.5  # within its deadline (plus the way back)
    assert len(ok) >= 0.6 * 40 * 8, statuses  # the device stayed busy: most of its capacity was served
    assert len(refused) >= 0.25 * len(outcomes), statuses
    assert statistics.median(o.latency_s for o in refused) < 0.1  # refused at once, not after waiting
    assert rss_after - rss_before < 100 * 1_048_576
    print(  # the figures the closing note of the hardening issue reports (pytest -s)
        f"2x overload: {dict(statuses)}; 200s: max {max(o.latency_s for o in ok):.2f} s; 503s: median "
        f"{statistics.median(o.latency_s for o in refused) * 1000:.1f} ms; RSS +{(rss_after - rss_before) / 1e6:.1f} MB"
    )
    recovered = asyncio.run(open_loop(server.url, rate=10, seconds=3, image=image))  # a quarter of capacity
    assert [o.status for o in recovered] == [200] * len(recovered)
    assert statistics.median(o.latency_s for o in recovered) < 0.5


def test_sigterm_under_overload_loses_nothing_accepted(start_server, weights_dir: Path, tmp_path: Path) -> None:
    server = start_server(sim_args(weights_dir), env=sim_env(tmp_path / "lock", 50, 0))
    server.wait_ready()
    image = png_bytes(77)
    expected = httpx.post(server.url + "/predict?model=alpha", content=image, headers={"content-type": "image/png"})

    async def load_then_sigterm() -> list[Outcome]:
        load = asyncio.ensure_future(open_loop(server.url, rate=80, seconds=6, image=image))
        await asyncio.sleep(3)  # halfway through the schedule of the load
        server.proc.send_signal(signal.SIGTERM)
        return await load

    outcomes = asyncio.run(load_then_sigterm())
    assert server.proc.wait(30) == 0
    print(f"SIGTERM under 2x overload: {dict(Counter(o.status or o.error for o in outcomes))}")  # pytest -s
    answered = [o for o in outcomes if o.status]
    assert {o.status for o in answered} <= {200, 503}
    assert all(o.body == expected.json() for o in answered if o.status == 200)
    # No HTTP answer only when the connection was refused: the server had stopped listening. A request it
    # had accepted is never dropped without an answer.
    assert {o.error for o in outcomes if not o.status} <= {"ConnectError"}, Counter(o.error for o in outcomes)
    assert sum(o.status == 200 for o in answered) > 40
