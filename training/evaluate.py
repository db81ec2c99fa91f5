"""``resnet-eval``: accuracy, per-class accuracy and a confusion matrix of a checkpoint on a dataset.

With ``--via-server URL`` the same images also go through a running service and the two top-1 answers are
compared image by image (``training.serve_eval``): exit status 1 when that shows train/serve skew.
"""

from __future__ import annotations

import argparse
import json
import os
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
from training.serve_eval import ServeEvalError, describe_served_model, evaluate_via_server, format_report

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
    served = p.add_argument_group(
        "through a running service",
        "Send the same test images to a resnet-serve instance and compare its top-1 with the model's in process, "
        "image by image. Train/serve skew (exit status 1) when the top-1 differs on more than 1% of the images, "
        "or when |b - c| > 2 sqrt(b + c), b the images right in process and wrong served, c the other way round "
        "(McNemar's test). Errors (unreachable server, unknown model, 401, other labels): exit status 2.",
    )
    served.add_argument("--via-server", metavar="URL", default=None, help="the service's base URL")
    served.add_argument("--model", default=None, help="the served model's name; None: the checkpoint's file stem")
    served.add_argument("--concurrency", type=int, default=8, help="requests in flight")
    served.add_argument("--api-key", default=None, help="the service's key; None: env RESNET_SERVE_API_KEY, if set")
    served.add_argument("--no-progress", action="store_true", help="no progress bar (none with --json either)")
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
    api_key = args.api_key or os.environ.get("RESNET_SERVE_API_KEY")  # from the environment: not shown in --help
    served = None
    if args.via_server is not None:  # an unusable server is an error before the in-process evaluation, not after it
        if args.concurrency < 1:
            raise EvaluationError(f"--concurrency must be at least 1, not {args.concurrency}")
        name = args.model or args.checkpoint.stem
        served = describe_served_model(args.via_server, name, metadata.labels, api_key=api_key)
    # The test images are prepared with the checkpoint's own preprocessing (for image folders: not the folder's
    # defaults), as the service would prepare them.
    data = load_data(args.dataset, data_dir=args.data_dir, download=args.download, limit=args.limit, spec=spec)
    if len(data.labels) != len(metadata.labels):
        raise DataError(f"{args.dataset} has {len(data.labels)} classes, the checkpoint {len(metadata.labels)}")
    loader = make_test_loader(data, batch_size=args.batch_size)
    stats = evaluate(
        model,
        loader,
        nn.CrossEntropyLoss(),
        device=device,
        spec=spec,
        num_classes=len(metadata.labels),
        keep_predictions=served is not None,
    )
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
    if served is not None:
        assert stats.predictions is not None
        result["via_server"] = evaluate_via_server(
            args.via_server,
            data.test,
            stats.predictions.tolist(),
            metadata.labels,
            served=served,
            api_key=api_key,
            concurrency=args.concurrency,
            progress=not (args.no_progress or args.json),
        )
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
    if "via_server" in result:
        print("\n".join(format_report(result["via_server"])))


def cli(argv: list[str] | None = None) -> int:
    """Console entry point: 0, or 1 when ``--via-server`` finds train/serve skew; an error is one line and 2."""
    args = get_args_parser().parse_args(argv)
    try:
        result = main(args)
    except (CheckpointError, DataError, EvaluationError, ServeEvalError) as exc:
        print(f"resnet-eval: error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(result))
    else:
        _print_text(result)
    return 1 if result.get("via_server", {}).get("skew") else 0


if __name__ == "__main__":
    raise SystemExit(cli())
