"""``resnet-convert``: import a torchvision ``.pth`` state dict into the checkpoint format.

The ``.pth`` file is read with ``torch.load(..., weights_only=True)``: tensors only, no code runs.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from models.checkpoint import build_model, save_checkpoint
from models.metadata import (
    ArchitectureSpec,
    CheckpointError,
    CheckpointMetadata,
    PreprocessingSpec,
    Provenance,
    TrainingInfo,
)
from models.registry import architecture_info, list_models
from training.datasets import DataError

__all__ = ["convert_state_dict", "cli"]

IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]


def _read_labels(path: Path | None, num_classes: int) -> list[str]:
    if path is None:
        return [f"class_{i}" for i in range(num_classes)]
    text = path.read_text(encoding="utf-8")
    labels = (
        json.loads(text) if path.suffix == ".json" else [line.strip() for line in text.splitlines() if line.strip()]
    )
    if len(labels) != num_classes:
        raise CheckpointError(f"{path} has {len(labels)} labels, the weights have {num_classes} classes")
    return [str(label) for label in labels]


def convert_state_dict(
    source: Path,
    output: Path,
    *,
    arch: str,
    labels_file: Path | None = None,
    input_size: int = 224,
    resize_size: int = 256,
    mean: list[float] | None = None,
    std: list[float] | None = None,
    dataset: str = "imagenet",
    accuracy: float | None = None,
    golden_dir: Path | None = None,
) -> CheckpointMetadata:
    """Load ``source`` (a torchvision state dict), check it fits ``arch`` strictly, write ``output``.

    ``golden_dir``: images whose fp32 answers are recorded in the checkpoint (its golden set, for
    ``--optimize`` and the model checks).
    """
    try:
        state = torch.load(source, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(f"{source}: no such file") from None
    except Exception as exc:  # noqa: BLE001  (torch raises many types for a foreign or unsafe pickle)
        raise CheckpointError(f"{source}: not a plain tensor state dict ({type(exc).__name__}: {exc})") from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or "fc.weight" not in state or "conv1.weight" not in state:
        raise CheckpointError(f"{source}: expected a ResNet state dict with conv1.weight and fc.weight keys")
    num_classes, in_channels = state["fc.weight"].shape[0], state["conv1.weight"].shape[1]
    architecture_info(arch)  # unknown names fail here with the list of known ones
    mean = mean or (IMAGENET_MEAN if in_channels == 3 else [0.5])
    std = std or (IMAGENET_STD if in_channels == 3 else [0.5])
    metadata = CheckpointMetadata(
        architecture=ArchitectureSpec(arch, num_classes, in_channels),
        preprocessing=PreprocessingSpec(
            input_size=input_size, channels=in_channels, resize_size=resize_size, mean=mean, std=std
        ),
        labels=_read_labels(labels_file, num_classes),
        training=TrainingInfo(dataset=dataset, test_accuracy=accuracy),
        provenance=Provenance.now(),
    )
    model = build_model(metadata)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise CheckpointError(f"{source} does not fit {arch}: {str(exc).splitlines()[1:3]}") from None
    golden = None
    if golden_dir is not None:
        from training.golden import golden_from_dir  # it decodes as the service does (app.preprocess)

        golden = golden_from_dir(model.eval(), metadata.preprocessing, metadata.labels, golden_dir)
    save_checkpoint(model, output, metadata, golden)
    return metadata


def cli(argv: list[str] | None = None) -> int:
    """Console entry point."""
    p = argparse.ArgumentParser(
        prog="resnet-convert",
        description=__doc__.splitlines()[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("source", type=Path, help="torchvision state dict (.pth)")
    p.add_argument("output", type=Path, help="NAME.safetensors to write (put it in weights/ to serve it)")
    p.add_argument("--arch", required=True, choices=list_models(), metavar="ARCH", help="architecture name")
    p.add_argument("--labels", type=Path, default=None, help="class names: one per line, or a JSON list")
    p.add_argument("--input-size", type=int, default=224, help="center-crop size")
    p.add_argument("--resize-size", type=int, default=256, help="shorter side before cropping")
    p.add_argument("--mean", type=float, nargs="+", default=None, help="per-channel mean (default ImageNet)")
    p.add_argument("--std", type=float, nargs="+", default=None, help="per-channel std (default ImageNet)")
    p.add_argument("--dataset", default="imagenet", help="dataset the weights were trained on")
    p.add_argument("--accuracy", type=float, default=None, help="known test accuracy (0-1)")
    p.add_argument(
        "--golden-dir",
        type=Path,
        default=None,
        help="held-out images (optionally one subfolder per label) whose answers are recorded in the checkpoint "
        "for --optimize and the model checks",
    )
    args = p.parse_args(argv)
    try:
        convert_state_dict(
            args.source,
            args.output,
            arch=args.arch,
            labels_file=args.labels,
            input_size=args.input_size,
            resize_size=args.resize_size,
            mean=args.mean,
            std=args.std,
            dataset=args.dataset,
            accuracy=args.accuracy,
            golden_dir=args.golden_dir,
        )
    except (CheckpointError, DataError, OSError, ValueError) as exc:
        print(f"resnet-convert: error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(cli())
