"""The shipped default model: present, servable, and as accurate as its metadata says."""

from __future__ import annotations

from pathlib import Path

import pytest

from models import read_metadata
from training.evaluate import get_args_parser, main

DEFAULT_MODEL = Path(__file__).resolve().parents[2] / "weights" / "resnet20-fashion-mnist.safetensors"
FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz")


def test_default_model_is_shipped_with_complete_metadata() -> None:
    meta = read_metadata(DEFAULT_MODEL)
    assert meta.architecture.name == "resnet20" and meta.training.dataset == "fashion-mnist"
    assert meta.labels[0] == "T-shirt/top" and len(meta.labels) == 10
    assert meta.training.test_accuracy is not None and meta.training.test_accuracy >= 0.94
    assert meta.provenance.command.startswith("resnet-train")


def test_default_model_accuracy_on_the_10000_test_images_matches_its_metadata(tmp_path: Path) -> None:
    if not FASHION_MNIST.exists():
        pytest.skip("Debian's dataset-fashion-mnist is not installed (apt-get install -y dataset-fashion-mnist)")
    args = get_args_parser().parse_args(
        [
            str(DEFAULT_MODEL),
            "--dataset",
            "fashion-mnist",
            "--data-dir",
            str(tmp_path),
            "--confusion-png",
            str(tmp_path / "cm.png"),
        ]
    )
    result = main(args)
    assert result["images"] == 10_000
    assert result["accuracy"] >= 0.94
    assert result["accuracy"] == pytest.approx(result["recorded_accuracy"], abs=1e-4)
    assert (tmp_path / "cm.png").stat().st_size > 10_000
