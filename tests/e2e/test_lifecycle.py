"""Process lifecycle: readiness around warm-up, API key, SIGTERM drain, startup failures.

The module's server is shut down by the last test (``test_sigterm_drains_then_exits_0``).
"""

from __future__ import annotations

import signal
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from serve_helpers import ServerProcess, png_bytes

KEY = "s3cret-key"
AUTH = {"Authorization": f"Bearer {KEY}"}


@pytest.fixture(scope="module")
def booted(start_server, weights_dir: Path) -> tuple[ServerProcess, list[tuple[int, int]]]:
    """A server with an API key, polled from process start: [(health status, ready status), ...]."""
    args = ["--weights-dir", str(weights_dir), "--api-key", KEY, "--drain-grace-s", "1.5", "--max-wait-ms", "300"]
    args += ["--cors-origins", "https://ui.example"]
    server = start_server([*args, "--max-batch-size", "128", "--torch-threads", "1"])
    seen: list[tuple[int, int]] = []
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and server.proc.poll() is None:
        try:
            health = server.get("/health").status_code
            ready = server.get("/ready")
            seen.append((health, ready.status_code))
            if ready.status_code == 200:
                break
            assert "detail" in ready.json()
        except httpx.TransportError:
            time.sleep(0.01)
    assert seen and seen[-1] == (200, 200), server.log()
    return server, seen


def test_ready_is_503_during_warm_up_then_200(booted: tuple[ServerProcess, list[tuple[int, int]]]) -> None:
    server, seen = booted
    assert (200, 503) in seen, f"never saw 'alive but not ready' while warming up: {seen}"
    first_ready = seen.index((200, 200))
    assert all(ready == 503 for _, ready in seen[:first_ready])
    assert '"msg": "model ready"' in server.log() and '"batch_cap": ' in server.log()


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
    server, _ = booted

    def predict(value: int) -> int:
        files = {"file": ("a.png", png_bytes(value), "image/png")}
        return httpx.post(server.url + "/predict", files=files, headers=AUTH, timeout=30).status_code

    with ThreadPoolExecutor(6) as pool:
        in_flight = [pool.submit(predict, v) for v in range(6)]  # held ~300 ms by --max-wait-ms
        time.sleep(0.15)
        server.proc.send_signal(signal.SIGTERM)
        time.sleep(0.2)
        assert server.get("/ready").status_code == 503  # draining: still answering, no longer ready
        assert [f.result() for f in in_flight] == [200] * 6
    assert server.proc.wait(30) == 0
    assert "draining" in server.log()


def test_strict_startup_with_a_broken_checkpoint_exits_non_zero(
    start_server, weights_dir: Path, tmp_path: Path
) -> None:
    (tmp_path / "alpha.safetensors").write_bytes((weights_dir / "alpha.safetensors").read_bytes())
    (tmp_path / "bad.safetensors").write_bytes(b"\x00" * 64)
    server = start_server(["--weights-dir", str(tmp_path), "--strict"])
    assert server.proc.wait(60) != 0
    assert "bad" in server.log() and "--strict" in server.log()
