"""The self-describing part of a checkpoint: everything needed to rebuild, preprocess for and label a model.

Stored as JSON in the safetensors header under the key ``resnet_serve``. Grouped like timm's
pretrained configs: architecture, preprocessing, labels, training figures, provenance.

The groups are plain dataclasses; reading a header validates it by their types with pydantic
(strict: no string for an int, no unknown keys, ``Literal`` values only), so a bad checkpoint fails
when it is read or scanned, not on the first request. ``__post_init__`` adds the cross-field checks.
"""

from __future__ import annotations

import json
import platform
import sys
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from importlib import metadata as importlib_metadata
from typing import Annotated, Any, Literal

from pydantic import (
    ConfigDict,
    Field,
    NonNegativeFloat,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    TypeAdapter,
    with_config,
)
from pydantic import ValidationError as _ValidationError
from pydantic_core import ErrorDetails

FORMAT_VERSION = 1
METADATA_KEY = "resnet_serve"

ResizeMode = Literal["shorter_side_center_crop", "stretch"]
Interpolation = Literal["bilinear", "bicubic", "nearest"]
Accuracy = Annotated[float, Field(ge=0, le=1)]

# Unknown keys in a header are an error (a typo'd key must not silently fall back to a default).
_STRICT_KEYS = ConfigDict(extra="forbid")


class CheckpointError(ValueError):
    """A checkpoint file is missing, truncated, foreign or inconsistent; the message says which and why."""


@with_config(_STRICT_KEYS)
@dataclass
class ArchitectureSpec:
    """Which registered architecture to build, and with which arguments."""

    name: str
    num_classes: PositiveInt
    in_channels: PositiveInt
    kwargs: dict[str, Any] = field(default_factory=dict)


@with_config(_STRICT_KEYS)
@dataclass
class PreprocessingSpec:
    """How a decoded image becomes the model's input tensor.

    ``shorter_side_center_crop``: resize the shorter side to ``resize_size``, then center-crop
    ``input_size``; ``stretch``: resize straight to ``input_size`` x ``input_size``. Then scale to
    [0, 1] and normalize with ``mean``/``std`` per channel.
    """

    input_size: PositiveInt
    channels: int
    resize_size: PositiveInt
    resize_mode: ResizeMode = "shorter_side_center_crop"
    interpolation: Interpolation = "bilinear"
    mean: list[float] = field(default_factory=lambda: [0.5])
    std: list[PositiveFloat] = field(default_factory=lambda: [0.5])

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


@with_config(_STRICT_KEYS)
@dataclass
class TrainingInfo:
    """How the weights were obtained and how good they are."""

    dataset: str
    test_accuracy: Accuracy | None = None
    epochs: NonNegativeInt | None = None
    best_epoch: NonNegativeInt | None = None
    images_per_second: NonNegativeFloat | None = None
    args: dict[str, Any] = field(default_factory=dict)


@with_config(_STRICT_KEYS)
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


@with_config(_STRICT_KEYS)
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
    def from_json(cls, text: str | bytes) -> CheckpointMetadata:
        """Parse and validate the header JSON by type; raises ``CheckpointError`` naming the bad key."""
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
        try:
            return _ADAPTER.validate_json(text, strict=True)
        except _ValidationError as exc:
            raise CheckpointError("; ".join(_describe(error) for error in exc.errors(include_url=False))) from None


_ADAPTER = TypeAdapter(CheckpointMetadata)


def _describe(error: ErrorDetails) -> str:
    """One pydantic error as one clause: the dotted key, what is wrong, and the offending value."""
    context = error.get("ctx") or {}
    if isinstance(context.get("error"), CheckpointError):
        return str(context["error"])  # a cross-field check from __post_init__: its message names the keys
    key = "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in error["loc"]).lstrip(".")
    if error["type"] == "missing":
        return f"checkpoint metadata key {key!r} is missing"
    if error["type"] in ("unexpected_keyword_argument", "extra_forbidden"):
        return f"checkpoint metadata has an unknown key {key!r}"
    value = repr(error["input"])
    if len(value) > 60:
        value = value[:57] + "..."
    message = error["msg"][0].lower() + error["msg"][1:]
    return f"checkpoint metadata key {key!r} is invalid: {message}, got {value}"
