"""The two workloads: a checkpoint to serve and a real encoded image to send it.

``large``: a random-initialised ResNet-50 (ImageNet preprocessing: shorter side 256, centre crop 224)
written in our checkpoint format, fed a 640x480 photo-like JPEG. ``small``: the shipped default
Fashion-MNIST ResNet-20 (or a random stand-in with the same architecture when it is not there yet),
fed a 28x28 grayscale PNG. Images are synthetic but photo-like (smooth gradients plus noise) so JPEG
decoding costs what a real photo of that size costs.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

from app.golden import record_golden
from models import (
    ArchitectureSpec,
    CheckpointMetadata,
    PreprocessingSpec,
    Provenance,
    TrainingInfo,
    create_model,
    read_metadata,
    save_checkpoint,
)

__all__ = ["WORKLOADS", "DEFAULT_SMALL_CHECKPOINT", "Workload", "prepare_workload", "photo_jpeg", "digit_png"]

WORKLOADS = ("large", "small")
DEFAULT_SMALL_CHECKPOINT = Path("weights/resnet20-fashion-mnist.safetensors")
LARGE_NAME = "resnet50-bench"
#: Golden images written into the workloads' random-weight checkpoints (``--optimize`` checks against them).
GOLDEN_IMAGES = 64


@dataclass(frozen=True)
class Workload:
    """What one workload serves and sends."""

    name: str
    checkpoint: Path  # inside a directory of its own, so ``--weights-dir`` serves just this model
    model_name: str
    image: bytes
    content_type: str
    note: str

    @property
    def weights_dir(self) -> Path:
        """The directory holding only this workload's checkpoint."""
        return self.checkpoint.parent


def photo_jpeg(width: int = 640, height: int = 480, quality: int = 90, seed: int = 0) -> bytes:
    """A photo-sized RGB JPEG with smooth structure and sensor-like noise."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    r = 128 + 100 * np.sin(x / 37.0) * np.cos(y / 53.0)
    g = 128 + 100 * np.sin((x + y) / 71.0)
    b = 128 + 100 * np.cos(np.hypot(x - width / 2, y - height / 2) / 29.0)
    rgb = np.stack([r, g, b], axis=-1) + rng.normal(0, 12, (height, width, 3))
    image = Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8)).filter(ImageFilter.GaussianBlur(0.8))
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=quality)
    return out.getvalue()


def scene_jpeg(seed: int, width: int = 640, height: int = 480) -> bytes:
    """A photo-sized RGB JPEG whose structure (frequencies, phases, centres) varies with ``seed``."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    channels = []
    for _ in range(3):
        f, phase = rng.uniform(5, 120, 4), rng.uniform(0, 2 * np.pi, 4)
        cx, cy, tilt = rng.uniform(0, width), rng.uniform(0, height), rng.uniform(-1, 1)
        channels.append(
            128
            + 60 * np.sin(x / f[0] + phase[0]) * np.cos(y / f[1] + phase[1])
            + 50 * np.sin((x * tilt + y) / f[2] + phase[2])
            + 40 * np.cos(np.hypot(x - cx, y - cy) / f[3] + phase[3])
        )
    rgb = np.stack(channels, axis=-1) + rng.normal(0, 12, (height, width, 3))
    image = Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8)).filter(ImageFilter.GaussianBlur(0.8))
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=90)
    return out.getvalue()


def digit_png(size: int = 28, seed: int = 0) -> bytes:
    """A 28x28 grayscale PNG, Fashion-MNIST-like (a bright blob on black)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size].astype(np.float32)
    blob = 255 * np.exp(-(((x - size / 2) / 7) ** 2 + ((y - size / 2) / 9) ** 2))
    pixels = np.clip(blob + rng.normal(0, 10, (size, size)), 0, 255).astype(np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels, mode="L").save(out, format="PNG")
    return out.getvalue()


def _write_resnet50(path: Path) -> None:
    meta = CheckpointMetadata(
        architecture=ArchitectureSpec("resnet50", 1000, 3),
        preprocessing=PreprocessingSpec(
            input_size=224, channels=3, resize_size=256, mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225]
        ),
        labels=[f"class_{i}" for i in range(1000)],
        training=TrainingInfo(dataset="random-init"),
        provenance=Provenance.now("bench: random-initialised ResNet-50 for speed measurements"),
    )
    model = create_model("resnet50")
    golden = record_golden(model, meta.preprocessing, [scene_jpeg(seed) for seed in range(GOLDEN_IMAGES)])
    save_checkpoint(model, path, meta, golden)


def _write_small_stand_in(path: Path) -> None:
    meta = CheckpointMetadata(
        architecture=ArchitectureSpec("resnet20", 10, 1),
        preprocessing=PreprocessingSpec(
            input_size=28, channels=1, resize_size=28, resize_mode="stretch", mean=[0.286], std=[0.353]
        ),
        labels=[f"class_{i}" for i in range(10)],
        training=TrainingInfo(dataset="random-init"),
        provenance=Provenance.now("bench: random-initialised stand-in for resnet20-fashion-mnist"),
    )
    model = create_model("resnet20", num_classes=10, in_channels=1)
    golden = record_golden(model, meta.preprocessing, [digit_png(seed=seed) for seed in range(GOLDEN_IMAGES)])
    save_checkpoint(model, path, meta, golden)


def prepare_workload(name: str, work_dir: Path, small_checkpoint: Path = DEFAULT_SMALL_CHECKPOINT) -> Workload:
    """Write (once) the checkpoint and image of workload ``name`` under ``work_dir``."""
    if name == "large":
        path = work_dir / "large" / f"{LARGE_NAME}.safetensors"
        if not path.exists():
            _write_resnet50(path)
        return Workload(name, path, LARGE_NAME, photo_jpeg(), "image/jpeg", "ResNet-50 (random init), 640x480 JPEG")
    if name == "small":
        directory = work_dir / "small"
        directory.mkdir(parents=True, exist_ok=True)
        if small_checkpoint.exists():
            path = directory / small_checkpoint.name
            if not path.exists() or path.stat().st_mtime < small_checkpoint.stat().st_mtime:
                path.unlink(missing_ok=True)
                path.write_bytes(small_checkpoint.read_bytes())
            note = f"{small_checkpoint.stem} ({read_metadata(path).training.dataset}), 28x28 PNG"
        else:
            path = directory / "resnet20-stand-in.safetensors"
            if not path.exists():
                _write_small_stand_in(path)
            note = f"ResNet-20 stand-in (random init; {small_checkpoint} not found), 28x28 PNG"
        return Workload(name, path, path.stem, digit_png(), "image/png", note)
    raise ValueError(f"unknown workload {name!r}; choose from {WORKLOADS}")
