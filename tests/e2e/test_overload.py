"""Overload (503 + Retry-After) and deadline (504) on real server processes."""

from __future__ import annotations

from pathlib import Path

import httpx
from serve_helpers import png_bytes


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


def test_deadline_answers_504(start_server, weights_dir: Path) -> None:
    server = start_server(["--weights-dir", str(weights_dir), "--timeout-s", "0.000001", "--torch-threads", "1"])
    server.wait_ready()
    r = httpx.post(server.url + "/predict", files={"file": ("a.png", png_bytes(), "image/png")}, timeout=30)
    assert r.status_code == 504
    assert "deadline" in r.json()["detail"]
    assert server.get("/ready").status_code == 200
