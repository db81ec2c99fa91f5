"""The watchdog and cancellation on a real server: a hung device, failing batches, a client that hangs up.

A hung accelerator is real here: the simulated device (``--device sim``) takes an exclusive ``flock`` on
its lock file for every forward, so a test that holds that lock holds the device, exactly as a stuck
GPU holds a forward thread. Failing batches come from a checkpoint whose weights are NaN.
"""

from __future__ import annotations

import socket
import threading
from pathlib import Path

import httpx
import torch
from serve_helpers import SIM_ARGS, ServerProcess, device_held, metric_total, png_bytes, sim_env, wait_until

from models import load_checkpoint, save_checkpoint


def sim_server(
    start_server, weights_dir: Path, lock_path: Path, *extra: str, t0_ms: float | None = None
) -> ServerProcess:
    server = start_server(["--weights-dir", str(weights_dir), *SIM_ARGS, *extra], env=sim_env(lock_path, t0_ms))
    server.wait_ready()
    return server


def predict_in_background(server: ServerProcess, results: list[httpx.Response]) -> threading.Thread:
    def post() -> None:
        files = {"file": ("a.png", png_bytes(), "image/png")}
        results.append(httpx.post(server.url + "/predict?model=alpha", files=files, timeout=60))

    thread = threading.Thread(target=post, daemon=True)
    thread.start()
    return thread


def queue_depth(server: ServerProcess) -> float:
    return metric_total(server.get("/metrics").text, "resnet_serve_queue_depth", model="alpha")


def test_a_hung_forward_fails_liveness_until_it_completes(start_server, weights_dir: Path, tmp_path: Path) -> None:
    lock = tmp_path / "device.lock"
    server = sim_server(start_server, weights_dir, lock, "--stall-timeout-s", "1")
    results: list[httpx.Response] = []
    with device_held(lock):
        client = predict_in_background(server, results)
        stalled = wait_until(lambda: (r := server.get("/health")).status_code == 503 and r, 30, "/health to fail")
        assert "alpha" in stalled.json()["detail"]
        assert server.get("/ready").status_code == 200  # readiness is about failures, not this
    client.join(30)
    assert [r.status_code for r in results] == [200]
    wait_until(lambda: server.get("/health").status_code == 200, 30, "/health to recover")


def test_consecutive_failed_batches_fail_readiness(start_server, tmp_path: Path, checkpoints: dict[str, Path]) -> None:
    model, metadata = load_checkpoint(checkpoints["alpha"])
    last_linear = [module for module in model.modules() if isinstance(module, torch.nn.Linear)][-1]
    with torch.no_grad():
        last_linear.bias.fill_(float("nan"))  # every score NaN, as after a sticky device fault
    weights = tmp_path / "weights"
    save_checkpoint(model, weights / "broken.safetensors", metadata)
    server = start_server(
        ["--weights-dir", str(weights), "--torch-threads", "1", "--max-failed-batches", "3", "--stall-timeout-s", "1"]
    )
    server.wait_ready()
    files = {"file": ("a.png", png_bytes(), "image/png")}
    for _ in range(3):
        answer = httpx.post(server.url + "/predict", files=files, timeout=30)
        assert answer.status_code == 500 and "nan" not in answer.text.lower()
    not_ready = server.get("/ready")
    assert not_ready.status_code == 503 and "broken" in not_ready.json()["detail"]
    # Not ready, so no traffic, so no batch that could succeed: once that has lasted --stall-timeout-s,
    # liveness fails too, and an orchestrator restarts the process.
    dead = wait_until(lambda: (r := server.get("/health")).status_code == 503 and r, 30, "/health to fail")
    assert "every batch failing" in dead.json()["detail"]


def test_a_client_that_hangs_up_mid_batch_does_not_disturb_its_batch_mates(
    start_server, weights_dir: Path, tmp_path: Path
) -> None:
    lock = tmp_path / "device.lock"
    server = sim_server(start_server, weights_dir, lock, "--max-batch-size", "2", "--stall-timeout-s", "0.5", t0_ms=300)
    expected = httpx.post(server.url + "/predict?model=alpha", files={"file": ("a.png", png_bytes(), "image/png")})
    first: list[httpx.Response] = []
    mate: list[httpx.Response] = []
    port = int(server.url.rsplit(":", 1)[1])
    body = png_bytes()
    head = f"POST /predict?model=alpha HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\nContent-Length: {len(body)}"
    with device_held(lock):
        blocker = predict_in_background(server, first)  # its batch of one waits for the device
        wait_until(lambda: server.get("/health").status_code == 503, 30, "its batch stuck on the device")
        mate_thread = predict_in_background(server, mate)
        leaving = socket.create_connection(("127.0.0.1", port))
        leaving.sendall(head.encode() + b"\r\n\r\n" + body)
        wait_until(lambda: queue_depth(server) == 2, 30, "two requests queued behind the held device")
    blocker.join(30)  # the device is free: the first batch ran, the next one (mate and leaving) is running now
    leaving.close()
    mate_thread.join(30)
    assert [r.status_code for r in first] == [200]
    assert [r.status_code for r in mate] == [200] and mate[0].json() == expected.json()
    wait_until(
        lambda: metric_total(server.get("/metrics").text, "resnet_serve_rejected_total", reason="disconnected") == 1,
        30,
        "the hang-up counted",
    )
    lines = [r for r in server.records() if r.get("msg") == "request" and r.get("path") == "/predict"]
    assert sorted(r["status"] for r in lines)[-4:] == [200, 200, 200, 499]
    assert max(r.get("batch_size", 0) for r in lines if r["status"] == 200) == 2  # mate's batch had two
