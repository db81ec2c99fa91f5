"""A real server on a GPU: a half-precision variant chosen by agreement, answering ``/predict`` (scripts/gpu-check)."""

from __future__ import annotations

import shutil
from pathlib import Path

import httpx
import pytest
import torch

from models import read_golden

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (scripts/gpu-check on a GPU host)"),
]

SHIPPED = Path(__file__).resolve().parents[2] / "weights" / "resnet20-fashion-mnist.safetensors"


def test_a_served_model_on_cuda_takes_a_half_precision_variant_and_answers(start_server, tmp_path: Path) -> None:
    shutil.copy(SHIPPED, tmp_path / SHIPPED.name)
    server = start_server(["--weights-dir", str(tmp_path), "--device", "cuda"], {"RESNET_SERVE_OPTIMIZE": "auto"})
    server.wait_ready(timeout=300)
    info = server.get(f"/models/{SHIPPED.stem}").json()
    print(info["optimization"])
    assert info["device"].startswith("cuda") and info["variant"] in ("eager", "eager-fp16", "eager-bf16")
    golden = read_golden(SHIPPED)
    assert golden is not None
    with httpx.Client(base_url=server.url, timeout=30) as client:
        agree = sum(
            client.post("/predict", content=image, headers={"Content-Type": "image/png"}).json()["predictions"][0][
                "index"
            ]
            == int(reference.argmax())
            for image, reference in zip(golden.images[:64], golden.probs[:64], strict=True)
        )
    assert agree >= 63
