"""Training data: torchvision datasets, a user's image folder, or synthetic images.

Every dataset yields uint8 (C, H, W) tensors already prepared by the checkpoint's
``prepare_image`` (the function the service uses), plus integer labels. Small datasets are held in
memory as one uint8 tensor so an epoch costs no decoding; augmentation runs in batch on the device
(``training.augment``). Normalization happens on the device, as in the service.
"""

from __future__ import annotations

import gzip
import random
import shutil
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import Dataset, TensorDataset

from models import PreprocessingSpec
from models.preprocessing import convert_mode, prepare_image, to_uint8_tensor

__all__ = ["DATASETS", "DataError", "LoadedData", "image_folder_spec", "load_data"]

DATASETS = ("fashion-mnist", "mnist", "cifar10", "cifar100", "imagefolder:PATH", "synthetic")

FASHION_MNIST_LABELS = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]  # fmt: skip
# Where Debian's dataset-fashion-mnist package puts the IDX files.
DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")


class DataError(Exception):
    """The requested data cannot be found or used; the message says what to do."""


@dataclass
class LoadedData:
    """A train and a test split with what the checkpoint needs to know about them."""

    train: Dataset[tuple[Tensor, int]]
    test: Dataset[tuple[Tensor, int]]
    labels: list[str]
    preprocessing: PreprocessingSpec
    in_memory: bool  # True: ``train``/``test`` are TensorDatasets of prepared uint8 images


def _spec(size: int, channels: int, mean: list[float], std: list[float]) -> PreprocessingSpec:
    return PreprocessingSpec(
        input_size=size, channels=channels, resize_size=size, resize_mode="stretch", mean=mean, std=std
    )


def _tensor_dataset(images: Tensor, targets: list[int] | Tensor, limit: int | None) -> TensorDataset:
    """uint8 images (N, H, W) or (N, H, W, C) -> TensorDataset of (C, H, W) images and labels."""
    images = images.unsqueeze(1) if images.ndim == 3 else images.permute(0, 3, 1, 2)
    targets = torch.as_tensor(targets, dtype=torch.long)
    if limit is not None:
        images, targets = images[:limit], targets[:limit]
    return TensorDataset(images.contiguous(), targets)


def _torchvision(name: str, root: Path, download: bool, limit: int | None) -> LoadedData:
    from torchvision import datasets as tv

    classes: dict[str, type] = {
        "fashion-mnist": tv.FashionMNIST,
        "mnist": tv.MNIST,
        "cifar10": tv.CIFAR10,
        "cifar100": tv.CIFAR100,
    }
    cls = classes[name]
    if name == "fashion-mnist" and not download:
        _link_debian_fashion_mnist(root)
    try:
        train = cls(str(root), train=True, download=download)
        test = cls(str(root), train=False, download=download)
    except RuntimeError as exc:
        hint = (
            "install Debian's dataset-fashion-mnist package, pass --data-dir, or --download"
            if name == "fashion-mnist"
            else "pass --data-dir where it lives, or --download"
        )
        raise DataError(f"{name} not found under {root} ({exc}); {hint}") from None
    data = torch.as_tensor(train.data) if name.endswith("mnist") else torch.from_numpy(train.data)
    test_data = torch.as_tensor(test.data) if name.endswith("mnist") else torch.from_numpy(test.data)
    if name.endswith("mnist"):
        labels = FASHION_MNIST_LABELS if name == "fashion-mnist" else [str(i) for i in range(10)]
        spec = _spec(28, 1, [0.2860], [0.3530]) if name == "fashion-mnist" else _spec(28, 1, [0.1307], [0.3081])
    else:
        labels = list(train.classes)
        spec = _spec(32, 3, [0.4914, 0.4822, 0.4465], [0.2470, 0.2435, 0.2616])
    return LoadedData(
        train=_tensor_dataset(data, train.targets, limit),
        test=_tensor_dataset(test_data, test.targets, limit),
        labels=labels,
        preprocessing=spec,
        in_memory=True,
    )


def _link_debian_fashion_mnist(root: Path) -> None:
    """Unpack Debian's IDX files into torchvision's raw folder where they are not there yet."""
    if not DEBIAN_FASHION_MNIST.is_dir():
        return
    raw = root / "FashionMNIST" / "raw"
    for source in DEBIAN_FASHION_MNIST.glob("*-ubyte.gz"):
        target = raw / source.name.removesuffix(".gz")
        if target.exists():
            continue
        raw.mkdir(parents=True, exist_ok=True)
        tmp = target.with_suffix(".tmp")
        with gzip.open(source, "rb") as compressed, open(tmp, "wb") as plain:
            shutil.copyfileobj(compressed, plain)
        tmp.replace(target)


def _synthetic(limit: int | None, channels: int = 1, size: int = 28, num_classes: int = 10) -> LoadedData:
    """Learnable random data: each class is a fixed random template plus noise."""
    generator = torch.Generator().manual_seed(0)
    templates = torch.randint(0, 256, (num_classes, channels, size, size), generator=generator)

    def split(n: int) -> TensorDataset:
        targets = torch.randint(0, num_classes, (n,), generator=generator)
        noise = torch.randint(-60, 61, (n, channels, size, size), generator=generator)
        images = (templates[targets] + noise).clamp(0, 255).to(torch.uint8)
        return TensorDataset(images, targets)

    n_train = limit or 512
    return LoadedData(
        train=split(n_train),
        test=split(max(n_train // 4, 64)),
        labels=[f"class_{i}" for i in range(num_classes)],
        preprocessing=_spec(size, channels, [0.5] * channels, [0.25] * channels),
        in_memory=True,
    )


class ImageFolderSplit(Dataset[tuple[Tensor, int]]):
    """A list of (path, label) decoded on access with ``transform`` (a PIL image -> uint8 tensor)."""

    def __init__(self, samples: list[tuple[Path, int]], transform: Callable[[Image.Image], Tensor]) -> None:
        self.samples = samples
        self.transform = transform

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        path, label = self.samples[index]
        with Image.open(path) as image:
            return self.transform(image), label


IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"}


def image_folder_spec(input_size: int, channels: int) -> PreprocessingSpec:
    """The preprocessing a model trained on an image folder gets: ImageNet-style resize and center crop."""
    mean, std = ([0.485, 0.456, 0.406], [0.229, 0.224, 0.225]) if channels == 3 else ([0.5], [0.25])
    return PreprocessingSpec(
        input_size=input_size,
        channels=channels,
        resize_size=round(input_size / 0.875),
        mean=mean,
        std=std,
    )


def _image_folder(root: Path, spec: PreprocessingSpec, val_fraction: float, limit: int | None, seed: int) -> LoadedData:
    """``root/<class>/<image>``; a seeded ``val_fraction`` of each class becomes the test split.

    Test images are prepared with ``spec``; training images get a random resized crop of its input size.
    """
    from torchvision.transforms import v2

    if not root.is_dir():
        raise DataError(f"image folder {root} does not exist")
    classes = sorted(p.name for p in root.iterdir() if p.is_dir())
    if not classes:
        raise DataError(f"image folder {root} has no class sub-folders (expected {root}/<class>/<image>)")
    rng = random.Random(seed)
    train_samples: list[tuple[Path, int]] = []
    test_samples: list[tuple[Path, int]] = []
    for label, name in enumerate(classes):
        files = sorted(p for p in (root / name).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        rng.shuffle(files)
        n_val = max(1, round(len(files) * val_fraction)) if len(files) > 1 else 0
        test_samples += [(p, label) for p in files[:n_val]]
        train_samples += [(p, label) for p in files[n_val:]]
    if not train_samples:
        raise DataError(f"image folder {root} has no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
    if limit is not None:
        train_samples, test_samples = train_samples[:limit], test_samples[:limit]
    augment = v2.Compose([v2.RandomResizedCrop(spec.input_size, antialias=True), v2.RandomHorizontalFlip()])

    def train_transform(image: Image.Image) -> Tensor:
        return to_uint8_tensor(augment(convert_mode(image, spec.channels)))

    def test_transform(image: Image.Image) -> Tensor:
        return prepare_image(image, spec)

    return LoadedData(
        train=ImageFolderSplit(train_samples, train_transform),
        test=ImageFolderSplit(test_samples, test_transform),
        labels=classes,
        preprocessing=spec,
        in_memory=False,
    )


def load_data(
    name: str,
    *,
    data_dir: Path,
    download: bool = False,
    limit: int | None = None,
    input_size: int = 224,
    channels: int = 3,
    val_fraction: float = 0.1,
    seed: int = 0,
    spec: PreprocessingSpec | None = None,
) -> LoadedData:
    """Load a dataset by name (see ``DATASETS``); ``limit`` keeps the first N images of each split.

    ``spec``: the preprocessing the data is for (a checkpoint's, to evaluate it). Image folders then
    prepare their test images with it (``input_size`` and ``channels`` are ignored); in-memory datasets
    keep their native images, which must have its size and channels, and report ``spec`` as theirs.
    Without it an image folder gets ``image_folder_spec(input_size, channels)``; ``input_size`` and
    ``channels`` mean nothing to the other datasets.
    """
    if name.startswith("imagefolder:"):
        spec = spec or image_folder_spec(input_size, channels)
        return _image_folder(Path(name.split(":", 1)[1]), spec, val_fraction, limit, seed)
    if name == "synthetic":
        data = _synthetic(limit)
    elif name in ("fashion-mnist", "mnist", "cifar10", "cifar100"):
        data = _torchvision(name, data_dir, download, limit)
    else:
        raise DataError(f"unknown dataset {name!r}; choose one of: {', '.join(DATASETS)}")
    if spec is None:
        return data
    native = data.preprocessing
    if (native.input_size, native.channels) != (spec.input_size, spec.channels):
        raise DataError(
            f"{name} images are {native.input_size}x{native.input_size} with {native.channels} channel(s), "
            f"the model expects {spec.input_size}x{spec.input_size} with {spec.channels}"
        )
    return replace(data, preprocessing=spec)
