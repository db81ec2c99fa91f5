"""``resnet-eval``: accuracy, per-class accuracy and a confusion matrix of a checkpoint on a dataset."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from torch import nn

from models import CheckpointError, load_checkpoint
from models.device import resolve_device
from training.datasets import DATASETS, DataError, load_data
from training.loaders import make_test_loader
from training.loops import evaluate
from training.plots import plot_confusion

__all__ = ["get_args_parser", "main", "cli"]


def get_args_parser() -> argparse.ArgumentParser:
    """Options of ``resnet-eval``."""
    p = argparse.ArgumentParser(
        prog="resnet-eval",
        description="Evaluate a checkpoint on a dataset's test split.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("checkpoint", type=Path, help="a .safetensors checkpoint")
    p.add_argument("--dataset", default="fashion-mnist", help=f"one of {', '.join(DATASETS)}")
    p.add_argument("--data-dir", type=Path, default=Path("data"), help="where datasets live")
    p.add_argument("--download", action="store_true", help="download torchvision datasets (needs internet)")
    p.add_argument("--limit", type=int, default=None, help="evaluate only the first N test images")
    p.add_argument("--batch-size", type=int, default=500, help="batch size")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--confusion-png", type=Path, default=None, help="write the confusion matrix here")
    p.add_argument("--json", action="store_true", help="print the result as one JSON object")
    return p


class EvaluationError(Exception):
    """A user mistake that stops evaluation with a one-line message (no traceback)."""


def main(args: argparse.Namespace) -> dict[str, Any]:
    """Evaluate and return accuracy, per-class accuracy and the confusion matrix."""
    try:
        device = resolve_device(args.device)
    except ValueError as exc:  # a malformed or missing --device
        raise EvaluationError(str(exc)) from None
    model, metadata = load_checkpoint(args.checkpoint, device=device)
    spec = metadata.preprocessing
    # The test images are prepared with the checkpoint's own preprocessing (for image folders: not the folder's
    # defaults), as the service would prepare them.
    data = load_data(args.dataset, data_dir=args.data_dir, download=args.download, limit=args.limit, spec=spec)
    if len(data.labels) != len(metadata.labels):
        raise DataError(f"{args.dataset} has {len(data.labels)} classes, the checkpoint {len(metadata.labels)}")
    loader = make_test_loader(data, batch_size=args.batch_size)
    stats = evaluate(model, loader, nn.CrossEntropyLoss(), device=device, spec=spec, num_classes=len(metadata.labels))
    per_class = dict(zip(metadata.labels, stats.per_class_accuracy(), strict=True))
    result = {
        "checkpoint": str(args.checkpoint),
        "dataset": args.dataset,
        "images": stats.images,
        "accuracy": stats.accuracy,
        "loss": stats.loss,
        "per_class_accuracy": per_class,
        "recorded_accuracy": metadata.training.test_accuracy,
        "confusion_matrix": stats.confusion.tolist() if stats.confusion is not None else None,
    }
    if args.confusion_png is not None and stats.confusion is not None:
        plot_confusion(
            stats.confusion,
            metadata.labels,
            args.confusion_png,
            f"{args.checkpoint.stem} on {args.dataset}: {100 * stats.accuracy:.2f}%",
        )
    return result


def _print_text(result: dict[str, Any]) -> None:
    print(
        f"{result['checkpoint']} on {result['dataset']}: accuracy {100 * result['accuracy']:.2f}% "
        f"({result['images']} images, loss {result['loss']:.4f})"
    )
    for label, accuracy in result["per_class_accuracy"].items():
        print(f"  {label:>16s}  {100 * accuracy:6.2f}%")


def cli(argv: list[str] | None = None) -> int:
    """Console entry point: a missing file or dataset is one line on stderr and exit status 2."""
    args = get_args_parser().parse_args(argv)
    try:
        result = main(args)
    except (CheckpointError, DataError, EvaluationError) as exc:
        print(f"resnet-eval: error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(result))
    else:
        _print_text(result)
    return 0


if __name__ == "__main__":
    raise SystemExit(cli())
