"""``resnet-convert``: torchvision weights become a servable checkpoint with identical outputs."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torchvision.models as tv
from PIL import Image

from app.golden import agreement, record_golden
from models import load_checkpoint, read_golden
from models.convert import cli


def test_torchvision_pth_converts_and_predicts_identically(tmp_path: Path) -> None:
    torch.manual_seed(0)
    reference = tv.resnet18(weights=None, num_classes=3).eval()
    source = tmp_path / "resnet18.pth"
    torch.save(reference.state_dict(), source)
    labels = tmp_path / "labels.txt"
    labels.write_text("cat\ndog\nbird\n")
    output = tmp_path / "pets.safetensors"
    assert cli([str(source), str(output), "--arch", "resnet18", "--labels", str(labels)]) == 0
    model, meta = load_checkpoint(output)
    assert meta.labels == ["cat", "dog", "bird"]
    assert (meta.preprocessing.input_size, meta.preprocessing.resize_size) == (224, 256)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(model(x), reference(x), rtol=0, atol=0)


def test_wrong_architecture_and_label_count_fail_with_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    source = tmp_path / "w.pth"
    torch.save(tv.resnet18(weights=None).state_dict(), source)
    assert cli([str(source), str(tmp_path / "x.safetensors"), "--arch", "resnet34"]) == 2
    assert "does not fit resnet34" in capsys.readouterr().err
    labels = tmp_path / "labels.txt"
    labels.write_text("a\nb\n")
    assert cli([str(source), str(tmp_path / "x.safetensors"), "--arch", "resnet18", "--labels", str(labels)]) == 2
    assert "2 labels" in capsys.readouterr().err
    assert not (tmp_path / "x.safetensors").exists()


def test_pickled_code_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    source = tmp_path / "evil.pth"
    torch.save({"fc.weight": torch.zeros(1), "conv1.weight": torch.zeros(1), "obj": Path("/")}, source)
    assert cli([str(source), str(tmp_path / "x.safetensors"), "--arch", "resnet18"]) == 2
    assert "not a plain tensor state dict" in capsys.readouterr().err


def test_golden_dir_records_the_folders_images_with_the_models_answers(tmp_path: Path) -> None:
    torch.manual_seed(0)
    reference = tv.resnet18(weights=None, num_classes=3).eval()
    source = tmp_path / "resnet18.pth"
    torch.save(reference.state_dict(), source)
    (tmp_path / "golden" / "class_1").mkdir(parents=True)
    for name, color in (("golden/a.jpg", (200, 30, 30)), ("golden/class_1/b.png", (20, 160, 40))):
        Image.new("RGB", (300, 240), color).save(tmp_path / name)
    output = tmp_path / "pets.safetensors"
    assert cli([str(source), str(output), "--arch", "resnet18", "--golden-dir", str(tmp_path / "golden")]) == 0
    golden = read_golden(output)
    assert golden is not None and len(golden) == 2 and golden.targets == [-1, 1]
    model, meta = load_checkpoint(output)
    assert agreement(golden.probs, record_golden(model, meta.preprocessing, golden.images).probs).top1 == 1.0
