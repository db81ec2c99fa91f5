"""``--optimize``: variants checked against the golden answers, the fastest eligible one served, the choice cached.

On the shipped Fashion-MNIST ResNet-20 (its golden set: 256 held-out test images), in process.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from factories import write_checkpoint

from app.engine import Engine
from app.golden import agreement, golden_inputs, predict_all
from app.optimize import OptimizationReport, optimize_engine
from app.optimize_cli import cli as optimize_cli
from models import add_golden, read_golden
from training.datasets import load_data

SHIPPED = Path("weights/resnet20-fashion-mnist.safetensors")
FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz")
CPU = torch.device("cpu")


def _optimize(
    path: Path, mode: str, cache: Path | None, min_agreement: float = 0.99
) -> tuple[Engine, OptimizationReport]:
    engine = Engine.load(path, device=CPU)
    report = optimize_engine(
        engine, mode=mode, version="v", min_agreement=min_agreement, max_batch_size=8, threads=1, cache_dir=cache
    )
    return engine, report


@pytest.fixture(scope="module")
def shipped(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("weights") / SHIPPED.name
    shutil.copy(SHIPPED, path)
    return path


@pytest.fixture(scope="module")
def auto(shipped: Path) -> tuple[Engine, OptimizationReport]:
    """``auto`` on the shipped model, every variant tried once, cached beside it."""
    return _optimize(shipped, "auto", shipped.parent / ".optimized")


def _probs(engine: Engine, path: Path) -> tuple[torch.Tensor, torch.Tensor]:
    golden = read_golden(path)
    assert golden is not None
    inputs = golden_inputs(golden.images, engine.metadata.preprocessing)
    return golden.probs, predict_all(engine.predict, inputs)


def test_auto_serves_the_fastest_variant_that_agrees(auto: tuple[Engine, OptimizationReport], shipped: Path) -> None:
    engine, report = auto
    results = {v.name: v for v in report.variants}
    assert set(results) >= {"eager", "eager-bf16", "openvino", "openvino-int8", "onnxruntime", "onnxruntime-int8"}
    assert not [(v.name, v.reason) for v in report.variants if v.status == "failed"]
    assert results["eager"].status in ("chosen", "eligible") and results["eager"].agreement["top1"] == 1.0
    eligible = [v for v in report.variants if v.status in ("chosen", "eligible")]
    assert all(v.agreement["top1"] >= 0.99 and v.images_per_s for v in eligible)
    assert all(v.agreement["top1"] < 0.99 for v in report.variants if v.status == "refused")
    chosen = results[report.chosen]
    assert chosen.status == "chosen" and chosen.per_image_s == min(v.per_image_s for v in eligible)
    assert engine.variant == report.chosen and engine.precision == chosen.precision
    assert engine.optimization is not None and engine.optimization["chosen"] == report.chosen
    assert report.golden_images == 256 and not report.cached
    reference, served = _probs(engine, shipped)  # the engine now answers through the chosen variant
    assert agreement(reference, served).top1 >= 0.99


def test_a_variant_that_disagrees_is_refused_and_never_served(shipped: Path, tmp_path: Path) -> None:
    engine, report = _optimize(shipped, "openvino-int8", None, min_agreement=1.0)
    int8 = next(v for v in report.variants if v.name == "openvino-int8")
    assert int8.status == "refused" and int8.agreement["top1"] < 1.0 and "below 100.00%" in int8.reason
    assert not int8.images_per_s  # a refused variant is not even timed
    assert report.chosen == engine.variant == "eager" and engine.precision == "fp32"
    assert "not eligible" in report.reason


def test_the_cache_is_reused_and_checked_again(auto: tuple[Engine, OptimizationReport], shipped: Path) -> None:
    first = auto[1]
    engine, report = _optimize(shipped, "auto", shipped.parent / ".optimized")
    assert report.cached and report.chosen == first.chosen and report.cache_key == first.cache_key
    assert [v.name for v in report.variants] == [v.name for v in first.variants]
    assert engine.variant == first.chosen
    reference, served = _probs(engine, shipped)
    assert agreement(reference, served).top1 >= 0.99
    _, other = _optimize(shipped, "auto", shipped.parent / ".optimized", min_agreement=0.98)
    assert other.cache_key != first.cache_key  # a setting that decides the choice is part of the key


def test_a_damaged_cache_is_rebuilt(shipped: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    _, first = _optimize(shipped, "openvino", cache)
    assert first.chosen == "openvino" and not first.cached
    (cache / f"{shipped.stem}-{first.cache_key}" / "model.bin").write_bytes(b"truncated")
    engine, again = _optimize(shipped, "openvino", cache)
    assert not again.cached and engine.variant == "openvino"
    _, third = _optimize(shipped, "openvino", cache)
    assert third.cached


def test_off_is_eager_fp32_unchanged(shipped: Path) -> None:
    engine = Engine.load(shipped, device=CPU)
    assert (engine.variant, engine.precision, engine.optimization) == ("eager", "fp32", None)
    reference, served = _probs(engine, shipped)
    assert agreement(reference, served).max_prob_diff < 1e-4


def test_without_golden_images_eager_serves(tmp_path: Path) -> None:
    engine, report = _optimize(write_checkpoint(tmp_path / "m.safetensors"), "auto", tmp_path / "cache")
    assert report.chosen == engine.variant == "eager" and "no golden images" in report.reason
    assert report.variants == [] and not (tmp_path / "cache").exists()


def test_golden_answers_that_do_not_match_the_weights_leave_eager_serving(shipped: Path, tmp_path: Path) -> None:
    golden = read_golden(shipped)
    assert golden is not None
    path = tmp_path / "stale.safetensors"
    shutil.copy(write_checkpoint(tmp_path / "other.safetensors"), path)
    add_golden(path, golden)  # another model's answers
    engine, report = _optimize(path, "openvino", None)
    assert report.chosen == engine.variant == "eager" and "disagrees with the checkpoint's recorded" in report.reason


def test_resnet_optimize_prints_the_variant_table_and_writes_the_cache(
    shipped: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    cache = tmp_path / "cache"
    argv = [str(shipped), "--optimize", "openvino", "--device", "cpu", "--cache-dir", str(cache)]
    assert optimize_cli(argv) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"{shipped.stem}: openvino (fp32)") and "top-1 agree" in out
    assert len(list(cache.glob("*/report.json"))) == 1
    assert optimize_cli(argv) == 0
    assert "[cached]" in capsys.readouterr().out
    assert optimize_cli([str(tmp_path / "missing.safetensors")]) == 2
    assert optimize_cli([str(shipped), "--optimize", "tensorrt-fp4"]) == 2


def test_fashion_mnist_accuracy_through_the_chosen_variant_is_within_0_2_points_of_fp32(
    auto: tuple[Engine, OptimizationReport], shipped: Path, tmp_path: Path
) -> None:
    if not FASHION_MNIST.exists():
        pytest.skip("Debian's dataset-fashion-mnist is not installed (apt-get install -y dataset-fashion-mnist)")
    data = load_data("fashion-mnist", data_dir=tmp_path, val_fraction=0.0)
    images, targets = data.test.tensors  # type: ignore[attr-defined]
    optimized = auto[0]
    eager = Engine.load(shipped, device=CPU)
    accuracy = {
        name: (predict_all(engine.predict, images).argmax(1) == targets).float().mean().item()
        for name, engine in (("eager", eager), ("optimized", optimized))
    }
    print(f"Fashion-MNIST test accuracy, {len(targets)} images: {accuracy} ({optimized.variant})")
    assert len(targets) == 10_000 and accuracy["eager"] >= 0.94
    assert abs(accuracy["optimized"] - accuracy["eager"]) <= 0.002


def test_bf16_is_tried_on_a_cpu_only_where_it_is_native(tmp_path: Path) -> None:
    from app.variants import cpu_has_native_bf16

    info = tmp_path / "cpuinfo"
    info.write_text("flags\t\t: fpu sse avx2 avx512f avx512_bf16\n")
    assert cpu_has_native_bf16(info)
    info.write_text("flags\t\t: fpu sse avx2\n")
    assert not cpu_has_native_bf16(info)
    assert cpu_has_native_bf16(tmp_path / "missing")
