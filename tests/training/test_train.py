"""``resnet-train`` end to end on real data paths: checkpoint, history, plots, resume, errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from PIL import Image

from app.golden import record_golden
from models import load_checkpoint, read_golden, read_metadata
from training import train as train_module
from training.train import cli, get_args_parser, main

FAST = ["--batch-size", "64", "--no-progress", "--workers", "0"]


def train(tmp_path: Path, *extra: str, name: str = "m") -> dict:
    args = get_args_parser().parse_args(["--output-dir", str(tmp_path), "--name", name, *FAST, *extra])
    return main(args)


def test_synthetic_run_writes_a_servable_checkpoint_history_and_curves(tmp_path: Path) -> None:
    summary = train(
        tmp_path,
        "--dataset",
        "synthetic",
        "--limit",
        "256",
        "--epochs",
        "3",
        "--opt",
        "adam",
        "--lr",
        "0.003",
        "--lr-scheduler",
        "none",
        "--arch",
        "mnist_resnet",
    )
    history = json.loads((tmp_path / "history.json").read_text())
    assert [row["epoch"] for row in history] == [1, 2, 3]
    assert history[-1]["train_loss"] < history[0]["train_loss"]  # it learns
    assert (tmp_path / "curves.png").stat().st_size > 10_000
    model, meta = load_checkpoint(tmp_path / "m.safetensors")
    best = max(history, key=lambda row: row["test_accuracy"])
    assert meta.training.test_accuracy == pytest.approx(best["test_accuracy"])
    assert meta.training.best_epoch == best["epoch"] == summary["best_epoch"]
    assert meta.training.args["arch"] == "mnist_resnet" and meta.training.dataset == "synthetic"
    assert meta.provenance.command.startswith("resnet-train")
    assert meta.architecture.name == "mnist_resnet" and meta.labels[0] == "class_0"
    assert model(torch.zeros(1, 1, 28, 28)).shape == (1, 10)
    golden = read_golden(tmp_path / "m.safetensors")  # held-out test images with the saved model's answers
    assert golden is not None and 0 < len(golden) <= 256 and all(0 <= t < 10 for t in golden.targets)
    recorded = record_golden(model, meta.preprocessing, golden.images)
    assert torch.allclose(recorded.probs, golden.probs, atol=1e-6)


def test_resume_continues_exactly_where_an_unbroken_run_would_be(tmp_path: Path) -> None:
    common = [
        "--dataset",
        "synthetic",
        "--limit",
        "128",
        "--lr-scheduler",
        "step",
        "--lr-step-size",
        "1",
        "--random-erase",
        "0.5",
        "--arch",
        "resnet20",
    ]
    train(tmp_path / "straight", *common, "--epochs", "2")
    train(tmp_path / "split", *common, "--epochs", "1")
    train(tmp_path / "split", *common, "--epochs", "2", "--resume")
    straight = torch.load(tmp_path / "straight" / "last.pt", weights_only=True)
    split = torch.load(tmp_path / "split" / "last.pt", weights_only=True)
    assert [row["epoch"] for row in split["history"]] == [1, 2]
    for key, tensor in straight["model"].items():
        torch.testing.assert_close(split["model"][key], tensor, msg=key)
    assert split["history"][1]["train_loss"] == pytest.approx(straight["history"][1]["train_loss"])


class Crash(Exception):
    """Stands in for a run killed after an epoch's resume state was written."""


def test_an_interrupted_warmup_cosine_run_resumes_exactly(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    common = ["--dataset", "synthetic", "--limit", "128", "--arch", "resnet20", "--epochs", "3"]
    common += ["--lr-scheduler", "cosine", "--warmup-epochs", "1"]  # epoch 1 warms up, epochs 2-3 decay
    train(tmp_path / "straight", *common)

    def crash(*args: object) -> None:  # plot_curves runs after last.pt of the epoch is written
        raise Crash

    monkeypatch.setattr(train_module, "plot_curves", crash)
    with pytest.raises(Crash):
        train(tmp_path / "split", *common)
    monkeypatch.undo()
    train(tmp_path / "split", *common, "--resume")
    straight = torch.load(tmp_path / "straight" / "last.pt", weights_only=True)
    split = torch.load(tmp_path / "split" / "last.pt", weights_only=True)
    assert [row["epoch"] for row in split["history"]] == [1, 2, 3]
    assert [row["lr"] for row in split["history"]] == [row["lr"] for row in straight["history"]]
    for key, tensor in straight["model"].items():
        torch.testing.assert_close(split["model"][key], tensor, msg=key)
    assert split["scheduler"] == straight["scheduler"]


def test_imagefolder_dataset_uses_folder_names_as_labels(tmp_path: Path) -> None:
    root = tmp_path / "images"
    for label, color in (("cats", (200, 50, 50)), ("dogs", (50, 50, 200))):
        (root / label).mkdir(parents=True)
        for i in range(6):
            Image.new("RGB", (40 + i, 36), color).save(root / label / f"{i}.png")
    train(
        tmp_path / "out",
        "--dataset",
        f"imagefolder:{root}",
        "--input-size",
        "32",
        "--epochs",
        "1",
        "--arch",
        "resnet20",
        name="pets",
    )
    meta = read_metadata(tmp_path / "out" / "pets.safetensors")
    assert meta.labels == ["cats", "dogs"]
    assert (meta.preprocessing.input_size, meta.preprocessing.channels) == (32, 3)
    assert meta.preprocessing.resize_mode == "shorter_side_center_crop"


def test_fashion_mnist_trains_offline_from_the_debian_package(tmp_path: Path) -> None:
    if not Path("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz").exists():
        pytest.skip("Debian's dataset-fashion-mnist is not installed (apt-get install -y dataset-fashion-mnist)")
    summary = train(
        tmp_path,
        "--dataset",
        "fashion-mnist",
        "--data-dir",
        str(tmp_path / "data"),
        "--limit",
        "512",
        "--epochs",
        "1",
        "--arch",
        "resnet20",
        "--channels-last",
    )
    meta = read_metadata(summary["checkpoint"])
    assert meta.labels[0] == "T-shirt/top" and meta.preprocessing.input_size == 28
    assert summary["mean_train_images_per_second"] > 0


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--dataset", "imagenet-21k"], "unknown dataset 'imagenet-21k'"),
        (["--dataset", "mnist", "--data-dir", "{tmp}/nothing"], "mnist not found"),
        (["--dataset", "imagefolder:{tmp}/empty"], "has no class sub-folders"),
        (["--dataset", "imagefolder:{tmp}/noimages"], "has no images"),
        (["--dataset", "synthetic", "--resume"], "no {tmp}/out/last.pt"),
        (["--dataset", "synthetic", "--device", "tpu"], "device 'tpu' is not one of auto, cpu, cuda, cuda:N"),
    ],
)
def test_user_mistakes_are_one_line_errors_with_exit_status_2(
    tmp_path: Path, capsys: pytest.CaptureFixture, argv: list[str], message: str
) -> None:
    (tmp_path / "empty").mkdir()
    (tmp_path / "noimages" / "a").mkdir(parents=True)
    (tmp_path / "noimages" / "a" / "notes.txt").write_text("x")
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    assert cli([*argv, "--output-dir", str(tmp_path / "out"), *FAST]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("resnet-train: error:") and "\n" not in err
    assert message.replace("{tmp}", str(tmp_path)) in err


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the behaviour of a machine without CUDA")
def test_cuda_without_cuda_is_a_one_line_error(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert cli(["--dataset", "synthetic", "--device", "cuda", "--output-dir", str(tmp_path), *FAST]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "resnet-train: error: device 'cuda' requested but CUDA is not available"


def test_unknown_architecture_is_rejected_by_the_parser(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli(["--arch", "resnet51"])
    assert exit_info.value.code == 2
    assert "invalid choice: 'resnet51'" in capsys.readouterr().err


def test_resume_refuses_a_different_number_of_classes(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    train(tmp_path, "--dataset", "synthetic", "--limit", "64", "--epochs", "1", "--arch", "resnet20")
    root = tmp_path / "two"
    for label in ("a", "b"):
        (root / label).mkdir(parents=True)
        for i in range(3):
            Image.new("RGB", (32, 32), (i, 0, 0)).save(root / label / f"{i}.png")
    argv = ["--dataset", f"imagefolder:{root}", "--input-size", "32", "--epochs", "2", "--resume"]
    assert cli([*argv, "--output-dir", str(tmp_path), "--name", "m", *FAST]) == 2
    assert "trained for 10 classes, this dataset has 2" in capsys.readouterr().err
