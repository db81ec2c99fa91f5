"""Golden images inside a checkpoint: written with the weights, read back, invisible to the model loader."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from factories import make_metadata, write_checkpoint
from safetensors import safe_open

from app.golden import agreement, png_bytes, record_golden
from models import CheckpointError, GoldenSet, add_golden, load_checkpoint, read_golden, save_checkpoint
from training.golden import cli as golden_cli


def _images(count: int) -> list[bytes]:
    generator = torch.Generator().manual_seed(1)
    return [png_bytes(torch.randint(0, 256, (1, 28, 28), dtype=torch.uint8, generator=generator)) for _ in range(count)]


def test_a_golden_set_round_trips_through_the_checkpoint_and_the_loader_ignores_it(tmp_path: Path) -> None:
    path = write_checkpoint(tmp_path / "m.safetensors")
    model, metadata = load_checkpoint(path)
    golden = record_golden(model, metadata.preprocessing, _images(5), [0, 1, 2, 3, -1])
    add_golden(path, golden)
    read = read_golden(path)
    assert read is not None and read.images == golden.images and read.targets == [0, 1, 2, 3, -1]
    assert torch.equal(read.probs, golden.probs) and read.probs.shape == (5, 10)
    reloaded, _ = load_checkpoint(path)  # the golden.* tensors are not weights
    assert all(
        torch.equal(a, b) for a, b in zip(model.state_dict().values(), reloaded.state_dict().values(), strict=True)
    )
    with safe_open(str(path), framework="pt") as handle:
        assert {"golden.data", "golden.offsets", "golden.probs", "golden.targets"} <= set(handle.keys())


def test_recorded_answers_are_the_fp32_models_through_the_serving_preprocessing(tmp_path: Path) -> None:
    path = write_checkpoint(tmp_path / "m.safetensors")
    model, metadata = load_checkpoint(path)
    golden = record_golden(model, metadata.preprocessing, _images(4))
    again = record_golden(model, metadata.preprocessing, golden.images)
    assert agreement(golden.probs, again.probs).max_prob_diff == 0.0
    assert torch.allclose(golden.probs.sum(1), torch.ones(4))
    other, _ = load_checkpoint(write_checkpoint(tmp_path / "other.safetensors", seed=7))
    assert agreement(golden.probs, record_golden(other, metadata.preprocessing, golden.images).probs).max_prob_diff > 0


def test_a_checkpoint_without_golden_images_reads_none(tmp_path: Path) -> None:
    assert read_golden(write_checkpoint(tmp_path / "m.safetensors")) is None


def test_inconsistent_golden_sets_are_refused(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="do not match"):
        GoldenSet([b"x", b"y"], torch.zeros(3, 10), [0, 0])
    model, _ = load_checkpoint(write_checkpoint(tmp_path / "m.safetensors"))
    with pytest.raises(CheckpointError, match="golden probabilities have 4 classes"):
        save_checkpoint(model, tmp_path / "n.safetensors", make_metadata(), GoldenSet([b"x"], torch.zeros(1, 4), [0]))
    tensors = GoldenSet([b"ab", b"c"], torch.zeros(2, 10), [0, 1]).to_tensors()
    tensors["golden.offsets"] = torch.tensor([0, 5, 3])
    with pytest.raises(CheckpointError, match="offsets"):
        GoldenSet.from_tensors(tensors)


def test_agreement_counts_top1_top5_and_the_largest_probability_difference() -> None:
    reference = torch.tensor([[0.7, 0.2, 0.1, 0.0, 0.0, 0.0], [0.1, 0.6, 0.3, 0.0, 0.0, 0.0]])
    swapped = torch.tensor([[0.7, 0.2, 0.1, 0.0, 0.0, 0.0], [0.1, 0.3, 0.6, 0.0, 0.0, 0.0]])
    measured = agreement(reference, swapped)
    assert measured.top1 == 0.5 and measured.top5_overlap == 1.0
    assert measured.max_prob_diff == pytest.approx(0.3)
    assert agreement(reference, torch.full_like(reference, float("nan"))).max_prob_diff == 1.0


def test_resnet_golden_adds_a_folder_of_images_with_classes_from_subfolders(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    path = write_checkpoint(tmp_path / "m.safetensors")
    images = _images(3)
    (tmp_path / "held" / "class3").mkdir(parents=True)
    (tmp_path / "held" / "class3" / "a.png").write_bytes(images[0])
    (tmp_path / "held" / "b.png").write_bytes(images[1])
    (tmp_path / "held" / "notes.txt").write_text("not an image")
    assert golden_cli([str(path), "--dir", str(tmp_path / "held")]) == 0
    golden = read_golden(path)
    assert golden is not None and golden.targets == [-1, 3] and golden.images == [images[1], images[0]]
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "x.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    assert golden_cli([str(path), "--dir", str(tmp_path / "bad")]) == 2
    assert "an image cannot be used" in capsys.readouterr().err
    assert read_golden(path) is not None  # the failed run left the file as it was
