"""``resnet-convert``: torchvision weights become a servable checkpoint with identical outputs."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torchvision.models as tv

from models import load_checkpoint
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
