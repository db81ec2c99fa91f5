"""``resnet-train``: train a registered ResNet on a real dataset and write a servable checkpoint.

Reads like the recipe: data, model, optimizer, schedule, loop, checkpoint. Under ``torchrun`` it runs
DistributedDataParallel (NCCL on GPUs, gloo on CPUs) and only rank 0 writes.
"""

from __future__ import annotations

import argparse
import io
import json
import shlex
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn

from models import (
    ArchitectureSpec,
    CheckpointMetadata,
    Provenance,
    TrainingInfo,
    create_model,
    list_models,
    save_checkpoint,
)
from models.checkpoint import write_atomically
from training.augment import random_crop, random_erase, random_flip
from training.datasets import DATASETS, DataError, LoadedData, load_data
from training.distributed import init_distributed_mode
from training.golden import DEFAULT_COUNT, golden_from_dataset
from training.loaders import make_loaders, set_epoch
from training.loops import EpochStats, EvalStats, evaluate, train_one_epoch
from training.optim import (
    OPTIMIZERS,
    SCHEDULERS,
    OptimizerConfig,
    ScheduleConfig,
    build_optimizer,
    build_scheduler,
)
from training.plots import plot_curves

__all__ = ["get_args_parser", "main", "cli"]

AMP_DTYPES = {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}


class TrainingError(Exception):
    """A user mistake that stops training with a one-line message (no traceback)."""


class WriteError(Exception):
    """An epoch's outputs could not be written (disk full, file too large, no permission): exit status 1."""


def get_args_parser() -> argparse.ArgumentParser:
    """Every option of ``resnet-train`` and its default, in one place."""
    p = argparse.ArgumentParser(
        prog="resnet-train",
        description="Train a ResNet and write NAME.safetensors (best test accuracy) to --output-dir.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument(
        "--arch",
        default="resnet20",
        choices=list_models(),
        metavar="ARCH",
        help=f"architecture: {', '.join(list_models())}",
    )
    p.add_argument("--dataset", default="fashion-mnist", help=f"one of {', '.join(DATASETS)}")
    p.add_argument("--data-dir", type=Path, default=Path("data"), help="where datasets live")
    p.add_argument("--download", action="store_true", help="download torchvision datasets (needs internet)")
    p.add_argument("--limit", type=int, default=None, help="use only the first N images of each split")
    p.add_argument("--input-size", type=int, default=224, help="input size for imagefolder datasets")
    p.add_argument("--channels", type=int, default=3, choices=[1, 3], help="channels for imagefolder datasets")
    p.add_argument("--val-fraction", type=float, default=0.1, help="imagefolder share held out for testing")
    p.add_argument("--epochs", type=int, default=30, help="number of epochs")
    p.add_argument("--batch-size", type=int, default=128, help="batch size per process")
    p.add_argument("--opt", default="sgd", choices=OPTIMIZERS, help="optimizer")
    p.add_argument("--lr", type=float, default=0.1, help="peak learning rate")
    p.add_argument("--momentum", type=float, default=0.9, help="SGD momentum")
    p.add_argument("--nesterov", action="store_true", help="Nesterov momentum for SGD")
    p.add_argument("--weight-decay", type=float, default=5e-4, help="weight decay (not on BN and biases)")
    p.add_argument("--lr-scheduler", default="cosine", choices=SCHEDULERS, help="learning-rate schedule")
    p.add_argument("--warmup-epochs", type=int, default=1, help="linear warm-up epochs (cosine)")
    p.add_argument("--lr-step-size", type=int, default=30, help="epochs between decays (step)")
    p.add_argument("--lr-gamma", type=float, default=0.1, help="decay factor (step, plateau)")
    p.add_argument("--lr-patience", type=int, default=3, help="epochs without improvement (plateau)")
    p.add_argument("--label-smoothing", type=float, default=0.0, help="label smoothing")
    p.add_argument(
        "--crop-padding",
        type=int,
        default=None,
        help="random-crop padding for in-memory datasets (default: 2 for 28px, 4 for 32px)",
    )
    p.add_argument("--no-flip", action="store_true", help="disable random horizontal flips")
    p.add_argument("--random-erase", type=float, default=0.0, help="random-erasing probability")
    p.add_argument("--amp", default="none", choices=list(AMP_DTYPES), help="mixed precision (bf16/fp16)")
    p.add_argument("--channels-last", action="store_true", help="channels_last memory format")
    p.add_argument("--zero-init-residual", action="store_true", help="zero-init each block's last BN")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--seed", type=int, default=0, help="random seed")
    p.add_argument("--workers", type=int, default=2, help="data-loading workers (imagefolder)")
    p.add_argument("--output-dir", type=Path, default=None, help="default: runs/NAME")
    p.add_argument("--name", default=None, help="checkpoint name (default: ARCH-DATASET)")
    p.add_argument("--resume", action="store_true", help="continue from OUTPUT_DIR/last.pt")
    p.add_argument(
        "--early-stopping", type=int, default=0, help="stop after N epochs without a better test accuracy (0: never)"
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument(
        "--golden-count",
        type=int,
        default=DEFAULT_COUNT,
        help="held-out test images stored in the checkpoint with the model's answers (0: none); --optimize and "
        "the model checks compare against them",
    )
    return p


def default_name(arch: str, dataset: str) -> str:
    """``resnet20-fashion-mnist``; an image folder is named after its directory."""
    if dataset.startswith("imagefolder:"):
        dataset = "imagefolder-" + Path(dataset.split(":", 1)[1]).resolve().name
    return f"{arch}-{dataset}"


def optimizer_config(args: argparse.Namespace) -> OptimizerConfig:
    """The optimizer the flags ask for."""
    return OptimizerConfig(
        name=args.opt, lr=args.lr, momentum=args.momentum, nesterov=args.nesterov, weight_decay=args.weight_decay
    )


def schedule_config(args: argparse.Namespace) -> ScheduleConfig:
    """The learning-rate schedule the flags ask for."""
    return ScheduleConfig(
        name=args.lr_scheduler,
        epochs=args.epochs,
        warmup_epochs=args.warmup_epochs,
        step_size=args.lr_step_size,
        gamma=args.lr_gamma,
        patience=args.lr_patience,
    )


def make_augment(
    data: LoadedData, *, crop_padding: int | None = None, flip: bool = True, erase_probability: float = 0.0
) -> Callable[[Tensor], Tensor] | None:
    """Batched on-device augmentation for in-memory datasets (image folders augment per image).

    Random crop with ``crop_padding`` (default: 2 for images up to 28 px, else 4), random horizontal
    flips, then random erasing with ``erase_probability``.
    """
    if not data.in_memory:
        return None
    padding = crop_padding
    if padding is None:
        padding = 2 if data.preprocessing.input_size <= 28 else 4

    def augment(images: Tensor) -> Tensor:
        images = random_crop(images, padding)
        if flip:
            images = random_flip(images)
        return random_erase(images, erase_probability)

    return augment


def save_state(path: Path, **state: Any) -> None:
    """Write the resume state atomically (it is only ever read with ``weights_only=True``)."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    write_atomically(path, buffer.getvalue())


def load_state(path: Path, model: nn.Module, num_classes: int) -> dict[str, Any]:
    """Read ``last.pt``; refuse one made for a different number of classes or architecture."""
    if not path.is_file():
        raise TrainingError(f"--resume: no {path} to resume from")
    state = torch.load(path, map_location="cpu", weights_only=True)
    if state["num_classes"] != num_classes:
        raise TrainingError(
            f"--resume: {path} was trained for {state['num_classes']} classes, this dataset has {num_classes}"
        )
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as exc:
        first_line = str(exc).splitlines()[0]
        raise TrainingError(f"--resume: {path} does not fit this architecture: {first_line}") from None
    return state


def epoch_row(epoch: int, lr: float, train: EpochStats, test: EvalStats) -> dict[str, Any]:
    """One line of history.json."""
    return {
        "epoch": epoch,
        "lr": lr,
        "train_loss": train.loss,
        "train_accuracy": train.accuracy,
        "test_loss": test.loss,
        "test_accuracy": test.accuracy,
        "train_images": train.images,
        "train_images_per_second": train.images_per_second,
        "epoch_seconds": train.seconds + test.seconds,
    }


def main(args: argparse.Namespace) -> dict[str, Any]:
    """Train as ``args`` say; returns the summary that is also printed as the last line."""
    try:
        context, device = init_distributed_mode(args.device)
    except ValueError as exc:  # a malformed or missing --device
        raise TrainingError(str(exc)) from None
    torch.manual_seed(args.seed + context.rank)
    name = args.name or default_name(args.arch, args.dataset)
    output_dir: Path = args.output_dir or Path("runs") / name
    if context.is_main:
        output_dir.mkdir(parents=True, exist_ok=True)

    data = load_data(
        args.dataset,
        data_dir=args.data_dir,
        download=args.download,
        limit=args.limit,
        input_size=args.input_size,
        channels=args.channels,
        val_fraction=args.val_fraction,
        seed=args.seed,
    )
    spec, labels = data.preprocessing, data.labels
    train_loader, test_loader = make_loaders(
        data,
        batch_size=args.batch_size,
        seed=args.seed,
        workers=args.workers,
        pin_memory=device.type == "cuda",
        context=context,
    )

    model = create_model(
        args.arch, num_classes=len(labels), in_channels=spec.channels, zero_init_residual=args.zero_init_residual
    ).to(device)
    if args.channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = build_optimizer(model, optimizer_config(args))
    scheduler, schedule_every = build_scheduler(optimizer, schedule_config(args), len(train_loader))
    amp_dtype = AMP_DTYPES[args.amp]
    scaler = torch.amp.GradScaler(device.type) if amp_dtype is torch.float16 and device.type == "cuda" else None
    criterion = nn.CrossEntropyLoss(label_smoothing=args.label_smoothing)

    start_epoch, best_accuracy, best_epoch, history = 1, -1.0, 0, []
    state_path = output_dir / "last.pt"
    if args.resume:
        state = load_state(state_path, model, len(labels))
        optimizer.load_state_dict(state["optimizer"])
        if scheduler is not None and state.get("scheduler") is not None:
            try:
                scheduler.load_state_dict(state["scheduler"])
            except (KeyError, ValueError) as exc:  # e.g. a cosine run saved before it became SequentialLR
                raise TrainingError(
                    f"--resume: {state_path}'s learning-rate schedule state does not fit --lr-scheduler "
                    f"{args.lr_scheduler} as this version builds it ({type(exc).__name__}: {exc}); start a new run"
                ) from None
        if scaler is not None and state.get("scaler") is not None:
            scaler.load_state_dict(state["scaler"])
        start_epoch, best_accuracy = state["epoch"] + 1, state["best_accuracy"]
        best_epoch, history = state["best_epoch"], state["history"]
        torch.set_rng_state(state["rng"])

    train_model: nn.Module = model
    if context.enabled:
        train_model = nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.index is not None else None
        )
    step_scheduler = scheduler.step if scheduler is not None and schedule_every == "step" else None
    augment = make_augment(
        data, crop_padding=args.crop_padding, flip=not args.no_flip, erase_probability=args.random_erase
    )
    checkpoint_path = output_dir / f"{name}.safetensors"
    arguments = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
    command = "resnet-train " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    if context.is_main:
        print(
            f"training {args.arch} on {args.dataset} ({len(data.train)} train / {len(data.test)} test images, "
            f"{len(labels)} classes) on {device} x{context.world_size}, epochs {start_epoch}..{args.epochs}",
            flush=True,
        )
    epochs_without_improvement = 0
    for epoch in range(start_epoch, args.epochs + 1):
        set_epoch(train_loader, epoch)
        lr = optimizer.param_groups[0]["lr"]
        train_stats = train_one_epoch(
            train_model,
            train_loader,
            optimizer,
            criterion,
            device=device,
            spec=spec,
            augment=augment,
            amp_dtype=amp_dtype,
            scaler=scaler,
            step_scheduler=step_scheduler,
            channels_last=args.channels_last,
            show_progress=context.is_main and not args.no_progress,
            description=f"epoch {epoch}/{args.epochs}",
        )
        test_stats = evaluate(
            model,
            test_loader,
            criterion,
            device=device,
            spec=spec,
            num_classes=len(labels),
            amp_dtype=amp_dtype,
            channels_last=args.channels_last,
        )
        if schedule_every == "epoch":
            scheduler.step()  # type: ignore[union-attr]
        elif schedule_every == "plateau":
            scheduler.step(test_stats.loss)  # type: ignore[union-attr,arg-type]
        history.append(epoch_row(epoch, lr, train_stats, test_stats))
        improved = test_stats.accuracy > best_accuracy
        if improved:
            best_accuracy, best_epoch, epochs_without_improvement = test_stats.accuracy, epoch, 0
        else:
            epochs_without_improvement += 1
        if context.is_main:
            print(
                f"epoch {epoch:3d}/{args.epochs} lr {lr:.4f} | train loss {train_stats.loss:.4f} "
                f"acc {100 * train_stats.accuracy:.2f}% ({train_stats.images_per_second:.0f} img/s) | "
                f"test loss {test_stats.loss:.4f} acc {100 * test_stats.accuracy:.2f}%"
                f"{' *' if improved else ''}",
                flush=True,
            )
            metadata: CheckpointMetadata | None = None
            if improved:
                metadata = CheckpointMetadata(
                    architecture=ArchitectureSpec(args.arch, len(labels), spec.channels),
                    preprocessing=spec,
                    labels=labels,
                    training=TrainingInfo(
                        dataset=args.dataset,
                        test_accuracy=test_stats.accuracy,
                        epochs=args.epochs,
                        best_epoch=epoch,
                        images_per_second=train_stats.images_per_second,
                        args=arguments,
                    ),
                    provenance=Provenance.now(command),
                )
            state = {
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict() if scheduler is not None else None,
                "scaler": scaler.state_dict() if scaler is not None else None,
                "epoch": epoch,
                "best_accuracy": best_accuracy,
                "best_epoch": best_epoch,
                "history": history,
                "num_classes": len(labels),
                "rng": torch.get_rng_state(),
                "args": arguments,
            }
            try:  # each file is replaced atomically: a failed write leaves the previous one as it was
                if metadata is not None:
                    golden = golden_from_dataset(model, data, args.golden_count) if args.golden_count else None
                    save_checkpoint(model, checkpoint_path, metadata, golden)
                save_state(state_path, **state)
                write_atomically(output_dir / "history.json", json.dumps(history, indent=1).encode())
                plot_curves(history, output_dir / "curves.png", f"{name}: {args.arch} on {args.dataset}")
            except OSError as exc:
                hint = "; fix that and continue with --resume" if state_path.is_file() else ""
                raise WriteError(
                    f"cannot save epoch {epoch} in {output_dir}: {exc.strerror or exc}; "
                    f"the files saved before are intact{hint}"
                ) from None
        if args.early_stopping and epochs_without_improvement >= args.early_stopping:
            if context.is_main:
                print(f"early stopping: no better test accuracy for {args.early_stopping} epochs", flush=True)
            break

    speeds = [row["train_images_per_second"] for row in history]
    summary = {
        "checkpoint": str(checkpoint_path),
        "best_test_accuracy": best_accuracy,
        "best_epoch": best_epoch,
        "epochs_run": len(history),
        "mean_train_images_per_second": sum(speeds) / len(speeds) if speeds else 0.0,
        "world_size": context.world_size,
    }
    if context.is_main:
        print(json.dumps(summary), flush=True)
    if context.enabled:
        dist.barrier()
        dist.destroy_process_group()
    return summary


def cli(argv: list[str] | None = None) -> int:
    """Console entry point: one line on stderr and exit status 2 for user mistakes, 1 for failed writes."""
    args = get_args_parser().parse_args(argv)
    try:
        main(args)
    except WriteError as exc:
        print(f"resnet-train: error: {exc}", file=sys.stderr)
        return 1
    except (DataError, TrainingError) as exc:
        print(f"resnet-train: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(cli())
