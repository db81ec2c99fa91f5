"""app.engine: loading, precision, normalization on device, top-k, warm-up and the batch cap."""

from __future__ import annotations

import io
import math
from pathlib import Path

import pytest
import torch
from PIL import Image

from app.engine import Engine, candidate_batch_sizes, pick_batch_cap
from app.errors import InferenceFailed
from models import load_checkpoint
from models.preprocessing import normalize

CPU = torch.device("cpu")


def png(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def engine(gray_checkpoint: Path) -> Engine:
    return Engine.load(gray_checkpoint, device=CPU)


def test_load_puts_the_model_in_eval_mode_in_channels_last(engine: Engine) -> None:
    assert engine.name == "gray"
    assert not engine.model.training
    conv = next(m for m in engine.model.modules() if isinstance(m, torch.nn.Conv2d) and m.kernel_size[0] > 1)
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    assert engine.input_shape == (1, 28, 28)


def test_predict_matches_the_checkpoint_model_with_normalization(engine: Engine, gray_checkpoint: Path) -> None:
    images = torch.randint(0, 256, (3, 1, 28, 28), dtype=torch.uint8)
    reference, meta = load_checkpoint(gray_checkpoint)
    with torch.inference_mode():
        expected = torch.softmax(reference(normalize(images, meta.preprocessing)), dim=1)
    assert torch.allclose(engine.predict(list(images)), expected, atol=1e-5)


def test_postprocess_gives_sorted_top_k_per_image(engine: Engine) -> None:
    probs = torch.softmax(torch.randn(3, 10), dim=1)
    out = engine.postprocess(probs, [1, 3, 50])
    assert [len(p) for p in out] == [1, 3, 10]  # top_k beyond num_classes returns every class
    for row, preds in zip(probs, out, strict=True):
        scores = [p["score"] for p in preds]
        assert scores == sorted(scores, reverse=True)
        assert preds[0]["index"] == int(row.argmax())
        assert preds[0]["label"] == f"class{preds[0]['index']}"
        assert preds[0]["score"] == pytest.approx(float(row.max()))
    assert sum(p["score"] for p in out[2]) == pytest.approx(1.0, abs=1e-5)


def test_infer_runs_bytes_to_predictions(engine: Engine) -> None:
    images = [engine.preprocess(png(Image.new(mode, (50, 40)))) for mode in ("RGB", "L", "RGBA")]
    results = engine.infer([(image, k) for image, k in zip(images, (2, 5, 1), strict=True)])
    assert [len(r) for r in results] == [2, 5, 1]


def test_rgb_engine(rgb_checkpoint: Path) -> None:
    engine = Engine.load(rgb_checkpoint, device=CPU)
    image = engine.preprocess(png(Image.new("L", (64, 64), 128)))
    assert image.shape == (3, 32, 32)
    [preds] = engine.infer([(image, 5)])
    assert len(preds) == 5 and {p["label"] for p in preds} == {f"class{i}" for i in range(5)}


@pytest.mark.parametrize(("precision", "dtype"), [("fp32", torch.float32), ("bf16", torch.bfloat16)])
def test_precision_sets_the_weights_dtype(gray_checkpoint: Path, precision: str, dtype: torch.dtype) -> None:
    engine = Engine.load(gray_checkpoint, device=CPU, precision=precision, channels_last=False)
    assert engine.precision == precision
    assert next(engine.model.parameters()).dtype == dtype
    probs = engine.predict(torch.zeros((2, 1, 28, 28), dtype=torch.uint8))
    assert probs.dtype == torch.float32 and torch.allclose(probs.sum(1), torch.ones(2), atol=1e-3)


def test_candidate_batch_sizes() -> None:
    assert candidate_batch_sizes(1) == [1]
    assert candidate_batch_sizes(8) == [1, 2, 4, 8]
    assert candidate_batch_sizes(12) == [1, 2, 4, 8, 12]


def test_pick_batch_cap_takes_the_largest_size_near_the_best_per_image_time() -> None:
    # ResNet-50 on a small CPU: bigger batches are slower per image -> small cap.
    assert pick_batch_cap({1: 0.050, 2: 0.048, 4: 0.060, 8: 0.070}) == 2
    # Tiny model: per-image time keeps falling -> the largest size.
    assert pick_batch_cap({1: 1.0, 2: 0.5, 4: 0.25, 8: 0.13}) == 8
    # Flat within 5%: take the larger batch; 6% worse is not flat.
    assert pick_batch_cap({1: 0.100, 2: 0.097, 4: 0.099}) == 4
    assert pick_batch_cap({1: 0.100, 2: 0.095, 4: 0.101}) == 2


def test_warmup_runs_every_size_and_sets_the_cap(gray_checkpoint: Path) -> None:
    engine = Engine.load(gray_checkpoint, device=CPU)
    cap = engine.warmup(8, autotune=True, rounds=1)
    assert set(engine.warmup_ms) == {1, 2, 4, 8}
    assert cap == engine.batch_cap and 1 <= cap <= 8
    assert engine.warmup(8, autotune=False, rounds=1) == 8


def test_non_finite_scores_fail_the_batch_instead_of_answering_nan(gray_checkpoint: Path) -> None:
    engine = Engine.load(gray_checkpoint, device=CPU, channels_last=False)
    image = engine.preprocess(png(Image.new("L", (28, 28), 128)))
    assert all(math.isfinite(p["score"]) for p in engine.infer([(image, 3)])[0])  # type: ignore[union-attr]
    with torch.no_grad():
        engine.model.fc.bias.fill_(float("nan"))  # broken weights: every logit NaN
    with pytest.raises(InferenceFailed, match="non-finite scores for all 2 images"):
        engine.infer([(image, 3), (image, 1)])
