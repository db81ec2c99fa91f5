"""What only shows on a GPU: fp16/bf16 agreement and pinned staging. ``scripts/gpu-check`` runs these.

Without CUDA every test here is skipped with that reason.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from app.engine import Engine
from app.golden import agreement, golden_inputs, predict_all
from app.optimize import optimize_engine
from models import read_golden

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (scripts/gpu-check on a GPU host)"),
]

SHIPPED = Path(__file__).resolve().parents[2] / "weights" / "resnet20-fashion-mnist.safetensors"
CUDA = torch.device("cuda")


def test_fp16_and_bf16_agree_with_fp32_on_the_golden_images(tmp_path: Path) -> None:
    engine = Engine.load(SHIPPED, device=CUDA)
    report = optimize_engine(
        engine, mode="auto", version="v", min_agreement=0.99, max_batch_size=32, threads=1, cache_dir=tmp_path
    )
    results = {v.name: v for v in report.variants}
    print({name: (v.status, v.agreement, v.speedup) for name, v in results.items()})
    assert results["eager-fp16"].agreement["top1"] >= 0.99
    if torch.cuda.is_bf16_supported():
        assert results["eager-bf16"].agreement["top1"] >= 0.99
    assert results["openvino"].status == "unavailable"  # CPU runtimes are not offered on a GPU
    assert report.chosen in ("eager", "eager-fp16", "eager-bf16")


def test_pinned_staging_reuses_one_buffer_per_shape_and_copies_exactly() -> None:
    engine = Engine.load(SHIPPED, device=CUDA)
    golden = read_golden(SHIPPED)
    assert golden is not None
    inputs = golden_inputs(golden.images, engine.metadata.preprocessing)
    first = predict_all(engine.predict, inputs)  # 256 images in chunks of 32: one shape, one buffer
    assert engine.stager is not None and engine.stager.buffers == 1
    again = predict_all(engine.predict, inputs)
    assert torch.equal(first, again) and engine.stager.buffers == 1
    assert agreement(golden.probs, first).top1 >= 0.999
    batch = torch.randint(0, 256, (8, 1, 28, 28), dtype=torch.uint8)
    assert torch.equal(engine.stager.to_device(batch).cpu(), batch) and engine.stager.buffers == 2
