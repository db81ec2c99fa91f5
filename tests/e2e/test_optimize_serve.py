"""A real server with ``--optimize auto``: the chosen variant serves, is reported, and is cached for the next start."""

from __future__ import annotations

import shutil
from pathlib import Path

import httpx
import pytest
from serve_helpers import ServerProcess, metric_total

from models import read_golden

SHIPPED = Path(__file__).resolve().parents[2] / "weights" / "resnet20-fashion-mnist.safetensors"
AUTO = {"RESNET_SERVE_OPTIMIZE": "auto"}
ARGS = ["--torch-threads", "1", "--workers", "1", "--max-batch-size", "8"]


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("weights")
    shutil.copy(SHIPPED, directory / SHIPPED.name)
    return directory


def _optimization(server: ServerProcess) -> dict:
    info = server.get(f"/models/{SHIPPED.stem}").json()
    assert info["variant"] == info["optimization"]["chosen"]
    return info["optimization"]


def test_auto_serves_the_chosen_variant_with_the_golden_answers_then_reuses_the_cache(
    start_server, weights: Path
) -> None:
    server = start_server(["--weights-dir", str(weights), *ARGS], AUTO)
    server.wait_ready(timeout=300)
    report = _optimization(server)
    statuses = {v["name"]: v["status"] for v in report["variants"]}
    assert report["mode"] == "auto" and not report["cached"] and statuses[report["chosen"]] == "chosen"
    assert statuses["eager"] in ("chosen", "eligible") and report["golden_images"] == 256
    text = server.get("/metrics").text
    assert metric_total(text, "resnet_serve_model_info", model=SHIPPED.stem, variant=report["chosen"]) == 1
    golden = read_golden(weights / SHIPPED.name)
    assert golden is not None
    agree = 0
    with httpx.Client(base_url=server.url, timeout=30) as client:
        for image, reference in zip(golden.images[:64], golden.probs[:64], strict=True):
            response = client.post("/predict", content=image, headers={"Content-Type": "image/png"})
            assert response.status_code == 200, response.text
            agree += response.json()["predictions"][0]["index"] == int(reference.argmax())
    assert agree >= 63  # 99% of 64, through HTTP and the chosen variant
    assert any(r.get("msg") == "optimised" for r in server.records())
    assert server.stop() == 0
    assert len(list((weights / ".optimized").glob("*/report.json"))) == 1

    again = start_server(["--weights-dir", str(weights), *ARGS], AUTO)
    again.wait_ready(timeout=120)
    cached = _optimization(again)
    assert cached["cached"] and cached["chosen"] == report["chosen"] and cached["cache_key"] == report["cache_key"]
    assert any(r.get("msg") == "optimised (cached)" for r in again.records())
