"""``resnet-eval`` on small data: the checkpoint's own preprocessing, and user mistakes as one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from factories import make_metadata, write_checkpoint
from PIL import Image

from training.datasets import load_data
from training.evaluate import cli, get_args_parser, main


def image_folder(root: Path, sizes: list[tuple[int, int]]) -> Path:
    for label, color in (("cats", (200, 50, 50)), ("dogs", (50, 50, 200))):
        (root / label).mkdir(parents=True)
        for i, size in enumerate(sizes):
            Image.new("RGB", size, color).save(root / label / f"{i}.png")
    return root


def test_device_defaults_to_auto_as_in_training() -> None:
    assert get_args_parser().parse_args(["m.safetensors"]).device == "auto"


def test_an_image_folder_is_prepared_with_the_checkpoints_preprocessing(tmp_path: Path) -> None:
    checkpoint = write_checkpoint(tmp_path / "pets.safetensors", channels=3, input_size=32, num_classes=2)
    root = image_folder(tmp_path / "images", [(40 + 7 * i, 36 + 5 * i) for i in range(10)])
    args = get_args_parser().parse_args([str(checkpoint), "--dataset", f"imagefolder:{root}", "--batch-size", "3"])
    result = main(args)
    assert result["images"] == 2  # a tenth of each class is the test split
    assert set(result["per_class_accuracy"]) == {"class0", "class1"}
    assert sum(map(sum, result["confusion_matrix"])) == 2


def test_load_data_prepares_image_folder_test_images_with_a_given_spec(tmp_path: Path) -> None:
    spec = make_metadata(channels=1, input_size=20).preprocessing
    root = image_folder(tmp_path / "images", [(64, 48)] * 4)
    data = load_data(f"imagefolder:{root}", data_dir=tmp_path, spec=spec)
    image, _ = data.test[0]
    assert data.preprocessing is spec
    assert image.shape == (1, 20, 20) and image.dtype == torch.uint8


def test_an_in_memory_dataset_of_another_shape_is_a_one_line_error(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    checkpoint = write_checkpoint(tmp_path / "rgb.safetensors", channels=3, input_size=32, num_classes=10)
    assert cli([str(checkpoint), "--dataset", "synthetic"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == ("resnet-eval: error: synthetic images are 28x28 with 1 channel(s), the model expects 32x32 with 3")


def test_synthetic_data_evaluates_as_json(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    checkpoint = write_checkpoint(tmp_path / "gray.safetensors")
    assert cli([str(checkpoint), "--dataset", "synthetic", "--limit", "64", "--json", "--device", "cpu"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["images"] == 64 and 0 <= result["accuracy"] <= 1


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--device", "tpu"], "device 'tpu' is not one of auto, cpu, cuda, cuda:N"),
        (["--dataset", "imagenet-21k"], "unknown dataset 'imagenet-21k'"),
    ],
)
def test_user_mistakes_are_one_line_errors_with_exit_status_2(
    tmp_path: Path, capsys: pytest.CaptureFixture, argv: list[str], message: str
) -> None:
    checkpoint = write_checkpoint(tmp_path / "gray.safetensors")
    assert cli([str(checkpoint), *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("resnet-eval: error:") and "\n" not in err and message in err


def test_a_missing_checkpoint_is_a_one_line_error(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert cli([str(tmp_path / "absent.safetensors")]) == 2
    assert (
        capsys.readouterr().err.strip() == f"resnet-eval: error: {tmp_path}/absent.safetensors: no such checkpoint file"
    )


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the behaviour of a machine without CUDA")
def test_cuda_without_cuda_is_a_one_line_error(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    checkpoint = write_checkpoint(tmp_path / "gray.safetensors")
    assert cli([str(checkpoint), "--device", "cuda"]) == 2
    assert capsys.readouterr().err.strip() == "resnet-eval: error: device 'cuda' requested but CUDA is not available"
