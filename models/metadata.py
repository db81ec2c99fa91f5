"""The self-describing part of a checkpoint: everything needed to rebuild, preprocess for and label a model.

Stored as JSON in the safetensors header under the key ``resnet_serve``. Grouped like timm's
pretrained configs: architecture, preprocessing, labels, training figures, provenance.
"""

from __future__ import annotations

import json
import platform
import sys
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, datetime
from importlib import metadata as importlib_metadata
from typing import Any, Literal

FORMAT_VERSION = 1
METADATA_KEY = "resnet_serve"

ResizeMode = Literal["shorter_side_center_crop", "stretch"]


class CheckpointError(ValueError):
    """A checkpoint file is missing, truncated, foreign or inconsistent; the message says which and why."""


@dataclass
class ArchitectureSpec:
    """Which registered architecture to build, and with which arguments."""

    name: str
    num_classes: int
    in_channels: int
    kwargs: dict[str, Any] = field(default_factory=dict)


@dataclass
class PreprocessingSpec:
    """How a decoded image becomes the model's input tensor.

    ``shorter_side_center_crop``: resize the shorter side to ``resize_size``, then center-crop
    ``input_size``; ``stretch``: resize straight to ``input_size`` x ``input_size``. Then scale to
    [0, 1] and normalize with ``mean``/``std`` per channel.
    """

    input_size: int
    channels: int
    resize_size: int
    resize_mode: ResizeMode = "shorter_side_center_crop"
    interpolation: Literal["bilinear", "bicubic", "nearest"] = "bilinear"
    mean: list[float] = field(default_factory=lambda: [0.5])
    std: list[float] = field(default_factory=lambda: [0.5])

    def __post_init__(self) -> None:
        if self.channels not in (1, 3):
            raise CheckpointError(f"preprocessing.channels must be 1 or 3, got {self.channels}")
        if len(self.mean) != self.channels or len(self.std) != self.channels:
            raise CheckpointError(
                f"preprocessing.mean/std need {self.channels} values each, got {len(self.mean)} and {len(self.std)}"
            )
        if self.input_size <= 0 or self.resize_size < self.input_size:
            raise CheckpointError(
                f"preprocessing needs 0 < input_size <= resize_size, got {self.input_size} and {self.resize_size}"
            )


@dataclass
class TrainingInfo:
    """How the weights were obtained and how good they are."""

    dataset: str
    test_accuracy: float | None = None
    epochs: int | None = None
    best_epoch: int | None = None
    images_per_second: float | None = None
    args: dict[str, Any] = field(default_factory=dict)


@dataclass
class Provenance:
    """When, by what and with which versions the file was written."""

    created: str
    command: str
    versions: dict[str, str]

    @classmethod
    def now(cls, command: str | None = None) -> Provenance:
        """Provenance of a file written by this process at this moment."""
        versions = {"python": platform.python_version()}
        for package in ("torch", "torchvision", "safetensors", "resnet-serve"):
            try:
                versions[package] = importlib_metadata.version(package)
            except importlib_metadata.PackageNotFoundError:
                continue
        return cls(
            created=datetime.now(UTC).isoformat(timespec="seconds"),
            command=command if command is not None else " ".join(sys.argv),
            versions=versions,
        )


@dataclass
class CheckpointMetadata:
    """Everything a checkpoint says about itself."""

    architecture: ArchitectureSpec
    preprocessing: PreprocessingSpec
    labels: list[str]
    training: TrainingInfo
    provenance: Provenance
    format_version: int = FORMAT_VERSION

    def __post_init__(self) -> None:
        if len(self.labels) != self.architecture.num_classes:
            raise CheckpointError(
                f"metadata has {len(self.labels)} labels but architecture.num_classes is "
                f"{self.architecture.num_classes}"
            )
        if self.preprocessing.channels != self.architecture.in_channels:
            raise CheckpointError(
                f"preprocessing.channels ({self.preprocessing.channels}) differs from "
                f"architecture.in_channels ({self.architecture.in_channels})"
            )

    def to_json(self) -> str:
        """Serialise to the JSON stored in the safetensors header."""
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> CheckpointMetadata:
        """Parse and validate the header JSON; raises ``CheckpointError`` naming the bad key."""
        try:
            raw = json.loads(text)
        except json.JSONDecodeError as exc:
            raise CheckpointError(f"checkpoint metadata is not valid JSON: {exc}") from None
        if not isinstance(raw, dict):
            raise CheckpointError("checkpoint metadata must be a JSON object")
        version = raw.get("format_version")
        if version != FORMAT_VERSION:
            raise CheckpointError(
                f"checkpoint format_version {version!r} is not supported (this code reads {FORMAT_VERSION})"
            )
        groups = {
            "architecture": ArchitectureSpec,
            "preprocessing": PreprocessingSpec,
            "training": TrainingInfo,
            "provenance": Provenance,
        }
        parsed: dict[str, Any] = {"format_version": version}
        for key, group in groups.items():
            parsed[key] = _build(group, raw.get(key), key)
        labels = raw.get("labels")
        if not isinstance(labels, list) or not all(isinstance(label, str) for label in labels):
            raise CheckpointError("checkpoint metadata key 'labels' must be a list of strings")
        parsed["labels"] = labels
        return cls(**parsed)


def _build(group: type, value: Any, key: str) -> Any:
    if not isinstance(value, dict):
        raise CheckpointError(f"checkpoint metadata key {key!r} is missing or not an object")
    known = {f.name for f in fields(group)}
    unknown = set(value) - known
    if unknown:
        raise CheckpointError(f"checkpoint metadata {key!r} has unknown keys {sorted(unknown)}")
    try:
        return group(**value)
    except TypeError as exc:
        raise CheckpointError(f"checkpoint metadata {key!r} is incomplete: {exc}") from None
