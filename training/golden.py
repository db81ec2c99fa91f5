"""Golden sets from data: held-out test images, or a folder of images, recorded with the fp32 model's answers.

``resnet-train`` stores one in every checkpoint it writes; ``resnet-convert --golden-dir`` in an imported one;
``resnet-golden CHECKPOINT`` adds one to (or replaces the one in) an existing checkpoint, e.g.:

    resnet-golden weights/resnet20-fashion-mnist.safetensors --dataset fashion-mnist
    resnet-golden weights/my-model.safetensors --dir held-out-images/

In a folder, images may sit in one subfolder per class named by the checkpoint's labels (then their true
class is recorded too) or directly in the folder.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from torch import nn

from app.errors import ServeError
from app.golden import png_bytes, record_golden
from models import CheckpointError, GoldenSet, PreprocessingSpec, add_golden, load_checkpoint
from training.datasets import DATASETS, DataError, LoadedData, load_data

__all__ = ["DEFAULT_COUNT", "IMAGE_SUFFIXES", "cli", "golden_from_dataset", "golden_from_dir"]

#: Images per golden set: 99% agreement then means at most 2 differing answers.
DEFAULT_COUNT = 256
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff")


def golden_from_dataset(model: nn.Module, data: LoadedData, count: int = DEFAULT_COUNT) -> GoldenSet:
    """``count`` test images spread evenly over the test split (PNG-encoded, lossless) and their answers."""
    total = len(data.test)  # type: ignore[arg-type]
    if total == 0:
        raise DataError("the test split is empty: no held-out images for the golden set")
    step = max(1, total // count)
    indices = list(range(0, total, step))[:count]
    images, targets = [], []
    for index in indices:
        image, target = data.test[index]
        images.append(png_bytes(image))
        targets.append(int(target))
    return record_golden(model, data.preprocessing, images, targets)


def golden_from_dir(model: nn.Module, spec: PreprocessingSpec, labels: list[str], directory: Path) -> GoldenSet:
    """Every image under ``directory`` (sorted; a subfolder named by a label gives its images that class)."""
    files = sorted(p for p in directory.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise DataError(f"{directory}: no images ({', '.join(IMAGE_SUFFIXES)}) for the golden set")
    classes = {label: index for index, label in enumerate(labels)}
    targets = [classes.get(p.parent.name, -1) if p.parent != directory else -1 for p in files]
    try:
        return record_golden(model, spec, [p.read_bytes() for p in files], targets)
    except ServeError as exc:  # an image the service itself would refuse
        raise DataError(f"{directory}: an image cannot be used: {exc}") from None


def cli(argv: list[str] | None = None) -> int:
    """``resnet-golden``: add a golden set to a checkpoint; exit 2 with one line on error."""
    p = argparse.ArgumentParser(prog="resnet-golden", description=__doc__.splitlines()[0])
    p.add_argument("checkpoint", type=Path, help="NAME.safetensors to add the golden set to (rewritten atomically)")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--dir", type=Path, help="a folder of images (optionally one subfolder per label)")
    source.add_argument("--dataset", metavar="NAME", help=f"a dataset's test split: {', '.join(DATASETS)}")
    p.add_argument("--count", type=int, default=DEFAULT_COUNT, help="images taken from --dataset")
    p.add_argument("--data-dir", type=Path, default=Path("data"), help="where --dataset's files are")
    args = p.parse_args(argv)
    try:
        model, metadata = load_checkpoint(args.checkpoint)
        spec = metadata.preprocessing
        if args.dir is not None:
            golden = golden_from_dir(model, spec, metadata.labels, args.dir)
        else:
            data = load_data(args.dataset, data_dir=args.data_dir, spec=spec, val_fraction=0.0)
            golden = golden_from_dataset(model, data, args.count)
        add_golden(args.checkpoint, golden)
    except (CheckpointError, DataError, OSError) as exc:
        print(f"resnet-golden: error: {exc}", file=sys.stderr)
        return 2
    print(f"{args.checkpoint}: {len(golden)} golden images recorded")
    return 0


if __name__ == "__main__":
    raise SystemExit(cli())
