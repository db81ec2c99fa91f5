"""The checkpoint format: round trip, atomic writes, clear errors, never unpickling."""

from __future__ import annotations

import errno
import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from factories import make_metadata
from faults import file_size_limit
from safetensors.torch import save_file

from models import (
    ArchitectureSpec,
    CheckpointError,
    PreprocessingSpec,
    TrainingInfo,
    create_model,
    load_checkpoint,
    read_metadata,
    save_checkpoint,
)
from models.metadata import METADATA_KEY


def test_round_trip_restores_weights_metadata_and_eval_mode(tmp_path: Path) -> None:
    model = create_model("resnet20", num_classes=10, in_channels=1)
    training = TrainingInfo(dataset="synthetic", test_accuracy=0.5, epochs=1, best_epoch=1, images_per_second=9.5)
    written = make_metadata(training=training)
    path = save_checkpoint(model, tmp_path / "m.safetensors", written)
    loaded, meta = load_checkpoint(path)
    assert not loaded.training
    assert meta.labels == [f"class{i}" for i in range(10)]
    assert meta.architecture == ArchitectureSpec("resnet20", 10, 1)
    assert meta == written
    for key, tensor in model.state_dict().items():
        assert torch.equal(tensor, loaded.state_dict()[key]), key


def test_metadata_records_versions_and_command(tmp_path: Path) -> None:
    path = save_checkpoint(create_model("resnet20", in_channels=1), tmp_path / "m.safetensors", make_metadata())
    meta = read_metadata(path)
    assert meta.provenance.command == "tests"
    assert {"python", "torch", "safetensors"} <= set(meta.provenance.versions)
    assert meta.format_version == 1


def test_a_write_failing_mid_save_keeps_the_old_checkpoint_and_leaves_no_temporary_file(tmp_path: Path) -> None:
    target = tmp_path / "m.safetensors"
    save_checkpoint(create_model("resnet20", in_channels=1), target, make_metadata())
    before = target.read_bytes()
    with file_size_limit(len(before) // 2), pytest.raises(OSError) as error:  # the kernel refuses the second half
        save_checkpoint(create_model("resnet20", in_channels=1), target, make_metadata())
    assert error.value.errno == errno.EFBIG
    assert target.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["m.safetensors"]
    load_checkpoint(target)


def test_truncated_file_gives_a_clear_error(tmp_path: Path) -> None:
    path = save_checkpoint(create_model("resnet20", in_channels=1), tmp_path / "m.safetensors", make_metadata())
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
    save_file(tensors, str(path), metadata={METADATA_KEY: make_metadata().to_json()})
    with pytest.raises(CheckpointError, match=r"fc\.(weight|bias).*shape \(5"):
        load_checkpoint(path)


def test_invalid_metadata_is_rejected_with_the_key(tmp_path: Path) -> None:
    raw = json.loads(make_metadata().to_json())
    del raw["labels"]
    path = tmp_path / "m.safetensors"
    save_file({"x": torch.zeros(1)}, str(path), metadata={METADATA_KEY: json.dumps(raw)})
    with pytest.raises(CheckpointError, match="labels"):
        read_metadata(path)
    raw = json.loads(make_metadata().to_json()) | {"format_version": 99}
    save_file({"x": torch.zeros(1)}, str(path), metadata={METADATA_KEY: json.dumps(raw)})
    with pytest.raises(CheckpointError, match="format_version 99"):
        read_metadata(path)


def write_header(path: Path, group: str | None, **changes: object) -> Path:
    """A safetensors file whose valid metadata header has ``changes`` applied to ``group`` (None: the top level)."""
    raw = json.loads(make_metadata().to_json())
    (raw if group is None else raw[group]).update(changes)
    save_file({"x": torch.zeros(1)}, str(path), metadata={METADATA_KEY: json.dumps(raw)})
    return path


@pytest.mark.parametrize(
    ("group", "changes", "message"),
    [
        ("preprocessing", {"resize_mode": "area"}, r"'preprocessing\.resize_mode' is invalid: .*'stretch', got 'area'"),
        ("preprocessing", {"interpolation": "lanczos"}, r"'preprocessing\.interpolation' is invalid"),
    ],
)
def test_a_value_outside_a_literal_fails_when_the_header_is_read(
    tmp_path: Path, group: str, changes: dict[str, object], message: str
) -> None:
    path = write_header(tmp_path / "m.safetensors", group, **changes)
    with pytest.raises(CheckpointError, match=message) as error:
        read_metadata(path)
    assert str(error.value).startswith(f"{path}: ") and "\n" not in str(error.value)


@pytest.mark.parametrize(
    ("group", "changes", "message"),
    [
        ("preprocessing", {"input_size": "28"}, r"'preprocessing\.input_size' is invalid: .*integer, got '28'"),
        ("architecture", {"num_classes": 10.5}, r"'architecture\.num_classes' is invalid: .*integer"),
        ("preprocessing", {"mean": "0.5"}, r"'preprocessing\.mean' is invalid"),
        ("training", {"test_accuracy": "high"}, r"'training\.test_accuracy' is invalid"),
        ("provenance", {"versions": {"torch": 2}}, r"'provenance\.versions\.torch' is invalid: .*string"),
        (None, {"labels": ["a", 1, "c", "d", "e", "f", "g", "h", "i", "j"]}, r"'labels\[1\]' is invalid: .*string"),
        (None, {"architecture": "resnet20"}, r"'architecture' is invalid: .*object"),
    ],
)
def test_a_wrong_type_fails_when_the_header_is_read(
    tmp_path: Path, group: str | None, changes: dict[str, object], message: str
) -> None:
    with pytest.raises(CheckpointError, match=message):
        read_metadata(write_header(tmp_path / "m.safetensors", group, **changes))


@pytest.mark.parametrize(
    ("group", "changes", "message"),
    [
        ("preprocessing", {"input_size": 0}, r"'preprocessing\.input_size' is invalid: .*greater than 0, got 0"),
        ("preprocessing", {"resize_size": -32}, r"'preprocessing\.resize_size' is invalid: .*greater than 0"),
        ("architecture", {"num_classes": 0}, r"'architecture\.num_classes' is invalid"),
        ("preprocessing", {"std": [0.0]}, r"'preprocessing\.std\[0\]' is invalid"),
        ("training", {"test_accuracy": 94.7}, r"'training\.test_accuracy' is invalid: .*less than or equal to 1"),
        ("preprocessing", {"resize_mod": "stretch"}, r"unknown key 'preprocessing\.resize_mod'"),
        (None, {"comment": "hi"}, r"unknown key 'comment'"),
        ("preprocessing", {"channels": 2, "mean": [0.5] * 2, "std": [0.5] * 2}, r"channels must be 1 or 3, got 2"),
        ("preprocessing", {"channels": 3, "mean": [0.5] * 3, "std": [0.5] * 3}, r"differs from architecture"),
    ],
)
def test_bad_values_and_unknown_keys_fail_when_the_header_is_read(
    tmp_path: Path, group: str | None, changes: dict[str, object], message: str
) -> None:
    with pytest.raises(CheckpointError, match=message):
        read_metadata(write_header(tmp_path / "m.safetensors", group, **changes))


def test_metadata_that_could_not_be_read_back_is_never_written(tmp_path: Path) -> None:
    bad = make_metadata(training=TrainingInfo(dataset="synthetic", test_accuracy=94.7))  # a percentage, not 0-1
    with pytest.raises(CheckpointError, match="refusing to write .*training.test_accuracy"):
        save_checkpoint(create_model("resnet20", in_channels=1), tmp_path / "m.safetensors", bad)
    assert list(tmp_path.iterdir()) == []


def test_metadata_consistency_is_checked() -> None:
    with pytest.raises(CheckpointError, match="labels"):
        replace(make_metadata(), labels=["a", "b"])
    with pytest.raises(CheckpointError, match="mean/std"):
        PreprocessingSpec(input_size=28, channels=3, resize_size=28, mean=[0.5], std=[0.5])


def test_file_name_must_end_in_safetensors(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match=".safetensors"):
        save_checkpoint(create_model("resnet20", in_channels=1), tmp_path / "m.pt", make_metadata())
