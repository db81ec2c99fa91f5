"""``resnet-experiment degradation|gradients|table``: the paper's findings, reproducible on real data."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from experiments.arch_table import architecture_rows, markdown_table
from experiments.degradation import NETS, subset, train_curves
from experiments.gradients import gradient_study
from experiments.plots import plot_degradation, plot_gradients
from models.device import resolve_device
from training.datasets import DATASETS, DataError, load_data

__all__ = ["main"]


def get_args_parser() -> argparse.ArgumentParser:
    """Subcommands and their options, each with its default."""
    parser = argparse.ArgumentParser(prog="resnet-experiment", description=__doc__)
    commands = parser.add_subparsers(dest="experiment", required=True)
    for name, text in (
        ("degradation", "plain-20/56 vs ResNet-20/56 training and test error per epoch"),
        ("gradients", "per-layer gradient norms of plain vs residual nets"),
        ("table", "layers, blocks, parameters and FLOPs of every architecture"),
    ):
        sub = commands.add_parser(name, help=text, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
        sub.add_argument("--output-dir", type=Path, default=Path("docs/experiments"), help="where results go")
        if name == "table":
            continue
        sub.add_argument("--dataset", default="fashion-mnist", help=f"one of {', '.join(DATASETS)}")
        sub.add_argument("--data-dir", type=Path, default=Path("data"), help="where datasets live")
        sub.add_argument("--download", action="store_true", help="download torchvision datasets")
        sub.add_argument("--batch-size", type=int, default=128, help="batch size")
        sub.add_argument("--lr", type=float, default=0.1, help="learning rate")
        sub.add_argument("--seed", type=int, default=0, help="random seed")
        sub.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
        if name == "degradation":
            sub.add_argument("--epochs", type=int, default=10, help="epochs per net")
            sub.add_argument("--fraction", type=float, default=0.1, help="share of the training split used")
            sub.add_argument("--nets", default=",".join(NETS), help="comma-separated architectures")
        else:
            sub.add_argument("--depths", default="20,56,110", help="comma-separated CIFAR depths (6n+2)")
            sub.add_argument("--steps", type=int, default=20, help="SGD steps before the second snapshot")
    return parser


def run_table(args: argparse.Namespace) -> None:
    rows = architecture_rows()
    (args.output_dir / "architectures.json").write_text(json.dumps(rows, indent=1))
    (args.output_dir / "architectures.md").write_text(markdown_table(rows))
    print(markdown_table(rows))


def run_gradients(args: argparse.Namespace, device: torch.device) -> None:
    data = load_data(args.dataset, data_dir=args.data_dir, download=args.download, limit=args.batch_size)
    depths = [int(d) for d in args.depths.split(",")]
    results = gradient_study(
        data, depths, batch_size=args.batch_size, steps=args.steps, lr=args.lr, seed=args.seed, device=device
    )
    (args.output_dir / "gradients.json").write_text(json.dumps(results, indent=1))
    plot_gradients(results, args.output_dir / "gradients.png", f"gradient norm per layer on {args.dataset}")
    for name, snapshots in results.items():
        init = snapshots["init"]
        print(f"{name:9s} init: first conv {init[0]:.2e}, last conv {init[-1]:.2e}, ratio {init[0] / init[-1]:.2e}")


def run_degradation(args: argparse.Namespace, device: torch.device) -> None:
    data = subset(load_data(args.dataset, data_dir=args.data_dir, download=args.download), args.fraction)
    nets = tuple(args.nets.split(","))
    results = train_curves(
        data, nets=nets, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, seed=args.seed, device=device
    )
    (args.output_dir / "degradation.json").write_text(json.dumps(results, indent=1))
    title = f"{args.dataset}, {len(data.train)} training images, {args.epochs} epochs, one recipe"
    plot_degradation(results, args.output_dir / "degradation.png", title)
    lines = ["| net | final training error | final test error | seconds |", "|---|---:|---:|---:|"]
    for name, result in results.items():
        last = result["curve"][-1]
        lines.append(
            f"| {name} | {100 * last['train_error']:.2f}% | {100 * last['test_error']:.2f}% | {result['seconds']:.0f} |"
        )
    (args.output_dir / "degradation.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def main(argv: list[str] | None = None) -> int:
    """Console entry point; a bad dataset or device is one line on stderr and exit status 2."""
    args = get_args_parser().parse_args(argv)
    try:
        device = resolve_device(args.device) if args.experiment != "table" else None
    except ValueError as exc:  # a malformed or missing --device
        print(f"resnet-experiment: error: {exc}", file=sys.stderr)
        return 2
    args.output_dir.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    try:
        if device is None:
            run_table(args)
        elif args.experiment == "gradients":
            run_gradients(args, device)
        else:
            run_degradation(args, device)
    except DataError as exc:
        print(f"resnet-experiment: error: {exc}", file=sys.stderr)
        return 2
    print(f"{args.experiment}: {time.perf_counter() - start:.0f} s; results in {args.output_dir}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
