"""Process lifecycle: readiness around warm-up, API key, SIGTERM drain (startup failures: test_faults_checkpoint.py).

The module's server is shut down by the last test (``test_sigterm_drains_then_exits_0``).
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from serve_helpers import ServerProcess, png_bytes, wait_until

KEY = "s3cret-key"
AUTH = {"Authorization": f"Bearer {KEY}"}


@pytest.fixture(scope="module")
def booted(start_server, weights_dir: Path) -> tuple[ServerProcess, list[tuple[int, int]]]:
    """A server with an API key, polled from process start: [(health status, ready status), ...]."""
    args = ["--weights-dir", str(weights_dir), "--api-key", KEY, "--drain-grace-s", "1.5", "--max-wait-ms", "300"]
    args += ["--cors-origins", "https://ui.example"]
    server = start_server([*args, "--max-batch-size", "128", "--torch-threads", "1"])
    seen: list[tuple[int, int]] = []

    def observe_until_ready() -> bool:
        if server.proc.poll() is not None:
            return True  # exited: the assertion below reports it with the log
        try:
            health = server.get("/health").status_code
            ready = server.get("/ready")
        except httpx.TransportError:  # not listening yet
            return False
        seen.append((health, ready.status_code))
        if ready.status_code == 200:
            return True
        assert "detail" in ready.json()
        return False

    wait_until(observe_until_ready, 90, lambda: f"server ready:\n{server.log()}", interval=0.01)
    assert seen and seen[-1] == (200, 200), server.log()
    return server, seen


def test_ready_is_503_during_warm_up_then_200(booted: tuple[ServerProcess, list[tuple[int, int]]]) -> None:
    server, seen = booted
    assert (200, 503) in seen, f"never saw 'alive but not ready' while warming up: {seen}"
    first_ready = seen.index((200, 200))
    assert all(ready == 503 for _, ready in seen[:first_ready])
    assert any(record["msg"] == "model ready" and record["batch_cap"] >= 1 for record in server.records())


def test_api_key_guards_everything_but_health_ready_metrics(booted: tuple[ServerProcess, list]) -> None:
    server, _ = booted
    with httpx.Client(base_url=server.url, timeout=30) as c:
        files = {"file": ("a.png", png_bytes(), "image/png")}
        missing = c.post("/predict", files=files)
        assert missing.status_code == 401 and "detail" in missing.json()
        assert missing.headers["www-authenticate"] == "Bearer"
        assert c.post("/predict", files=files, headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert c.get("/models").status_code == 401
        assert c.get("/models", headers=AUTH).status_code == 200
        assert c.post("/predict", files=files, headers=AUTH).status_code == 200
        for path in ("/health", "/ready", "/metrics"):
            assert c.get(path).status_code == 200


def test_cors_allows_only_the_configured_origin(booted: tuple[ServerProcess, list]) -> None:
    server, _ = booted
    preflight = {"Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "authorization"}
    ok = httpx.options(server.url + "/predict", headers={"Origin": "https://ui.example", **preflight})
    assert ok.status_code == 200 and ok.headers["access-control-allow-origin"] == "https://ui.example"
    denied = httpx.options(server.url + "/predict", headers={"Origin": "https://evil.example", **preflight})
    assert "access-control-allow-origin" not in denied.headers


def test_sigterm_drains_then_exits_0(booted: tuple[ServerProcess, list]) -> None:
    """Requests whose upload began before SIGTERM still get 200; meanwhile /ready answers 503; then exit 0."""
    server, _ = booted
    data = png_bytes()
    began = threading.Semaphore(0)
    finish = threading.Event()

    def held_upload() -> Iterator[bytes]:
        yield data[: len(data) // 2]
        began.release()  # httpx asks for the next chunk only once this one is on the wire
        if not finish.wait(60):
            raise TimeoutError("the test never let the upload finish")
        yield data[len(data) // 2 :]

    def predict() -> int:
        headers = {**AUTH, "Content-Type": "image/png"}  # chunked: no Content-Length for a generator body
        return httpx.post(server.url + "/predict", content=held_upload(), headers=headers, timeout=60).status_code

    with ThreadPoolExecutor(6) as pool:
        try:
            in_flight = [pool.submit(predict) for _ in range(6)]
            for _ in in_flight:  # every request is open, its body half sent and the rest owed
                assert began.acquire(timeout=30), "an upload never started"
            server.proc.send_signal(signal.SIGTERM)
            # draining (for --drain-grace-s): no longer ready, but still answering, new requests included
            wait_until(lambda: server.get("/ready").status_code == 503, 10, "/ready 503 after SIGTERM")
            files = {"file": ("a.png", data, "image/png")}
            assert httpx.post(server.url + "/predict", files=files, headers=AUTH, timeout=60).status_code == 200
        finally:
            finish.set()
        assert [f.result() for f in in_flight] == [200] * 6
    assert server.proc.wait(30) == 0
    assert "draining" in server.log()
