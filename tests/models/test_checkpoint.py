"""The checkpoint format: round trip, atomic writes, clear errors, never unpickling."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from models import (
    ArchitectureSpec,
    CheckpointError,
    CheckpointMetadata,
    PreprocessingSpec,
    Provenance,
    TrainingInfo,
    create_model,
    load_checkpoint,
    read_metadata,
    save_checkpoint,
)
from models import checkpoint as checkpoint_module
from models.metadata import METADATA_KEY


def metadata(num_classes: int = 10, name: str = "resnet20") -> CheckpointMetadata:
    return CheckpointMetadata(
        architecture=ArchitectureSpec(name, num_classes, 1),
        preprocessing=PreprocessingSpec(input_size=28, channels=1, resize_size=28, mean=[0.3], std=[0.35]),
        labels=[f"c{i}" for i in range(num_classes)],
        training=TrainingInfo(dataset="synthetic", test_accuracy=0.5, epochs=1, best_epoch=1),
        provenance=Provenance.now("pytest"),
    )


def test_round_trip_restores_weights_metadata_and_eval_mode(tmp_path: Path) -> None:
    model = create_model("resnet20", num_classes=10, in_channels=1)
    path = save_checkpoint(model, tmp_path / "m.safetensors", metadata())
    loaded, meta = load_checkpoint(path)
    assert not loaded.training
    assert meta.labels == [f"c{i}" for i in range(10)]
    assert meta.architecture == ArchitectureSpec("resnet20", 10, 1)
    assert meta.preprocessing == metadata().preprocessing
    for key, tensor in model.state_dict().items():
        assert torch.equal(tensor, loaded.state_dict()[key]), key


def test_metadata_records_versions_and_command(tmp_path: Path) -> None:
    path = save_checkpoint(create_model("resnet20", in_channels=1), tmp_path / "m.safetensors", metadata())
    meta = read_metadata(path)
    assert meta.provenance.command == "pytest"
    assert {"python", "torch", "safetensors"} <= set(meta.provenance.versions)
    assert meta.format_version == 1


def test_a_crash_mid_save_keeps_the_old_checkpoint_and_leaves_no_temporary_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "m.safetensors"
    save_checkpoint(create_model("resnet20", in_channels=1), target, metadata())
    before = target.read_bytes()

    def crash_halfway(tensors: dict[str, torch.Tensor], filename: str, metadata: dict[str, str]) -> None:
        Path(filename).write_bytes(before[: len(before) // 2])
        raise OSError("disk full")

    monkeypatch.setattr(checkpoint_module, "save_file", crash_halfway)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(create_model("resnet20", in_channels=1), target, metadata())
    assert target.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["m.safetensors"]


def test_truncated_file_gives_a_clear_error(tmp_path: Path) -> None:
    path = save_checkpoint(create_model("resnet20", in_channels=1), tmp_path / "m.safetensors", metadata())
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated"):
        load_checkpoint(path)


def test_missing_file_and_foreign_files_are_rejected(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        read_metadata(tmp_path / "absent.safetensors")
    foreign = tmp_path / "foreign.safetensors"
    save_file({"x": torch.zeros(3)}, str(foreign))
    with pytest.raises(CheckpointError, match="resnet-convert"):
        read_metadata(foreign)
    not_safetensors = tmp_path / "pickle.safetensors"
    torch.save({"x": torch.zeros(3)}, not_safetensors)
    with pytest.raises(CheckpointError, match="not a readable safetensors"):
        read_metadata(not_safetensors)


def test_weights_that_do_not_fit_the_architecture_name_the_bad_key(tmp_path: Path) -> None:
    path = tmp_path / "m.safetensors"
    wrong = create_model("resnet20", num_classes=5, in_channels=1)  # fc has 5 outputs, metadata says 10
    tensors = {k: v.contiguous() for k, v in wrong.state_dict().items()}
    save_file(tensors, str(path), metadata={METADATA_KEY: metadata().to_json()})
    with pytest.raises(CheckpointError, match=r"fc\.(weight|bias).*shape \(5"):
        load_checkpoint(path)


def test_invalid_metadata_is_rejected_with_the_key(tmp_path: Path) -> None:
    raw = json.loads(metadata().to_json())
    del raw["labels"]
    path = tmp_path / "m.safetensors"
    save_file({"x": torch.zeros(1)}, str(path), metadata={METADATA_KEY: json.dumps(raw)})
    with pytest.raises(CheckpointError, match="labels"):
        read_metadata(path)
    raw = json.loads(metadata().to_json()) | {"format_version": 99}
    save_file({"x": torch.zeros(1)}, str(path), metadata={METADATA_KEY: json.dumps(raw)})
    with pytest.raises(CheckpointError, match="format_version 99"):
        read_metadata(path)


def test_metadata_consistency_is_checked() -> None:
    with pytest.raises(CheckpointError, match="labels"):
        replace(metadata(), labels=["a", "b"])
    with pytest.raises(CheckpointError, match="mean/std"):
        PreprocessingSpec(input_size=28, channels=3, resize_size=28, mean=[0.5], std=[0.5])


def test_file_name_must_end_in_safetensors(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match=".safetensors"):
        save_checkpoint(create_model("resnet20", in_channels=1), tmp_path / "m.pt", metadata())
