"""Test factories: checkpoint metadata and tiny checkpoints without the boilerplate.

Any test imports them as ``from factories import make_metadata, write_checkpoint`` (see tests/conftest.py).
"""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import torch
from fastapi import FastAPI

from models import (
    ArchitectureSpec,
    CheckpointMetadata,
    PreprocessingSpec,
    Provenance,
    TrainingInfo,
    create_model,
    load_checkpoint,
    read_golden,
    save_checkpoint,
)

__all__ = [
    "make_metadata",
    "running_app",
    "write_checkpoint",
    "replace_file",
    "write_perturbed",
    "write_version",
    "write_versions",
]


def make_metadata(
    arch: str = "resnet20", *, channels: int = 1, input_size: int = 28, num_classes: int = 10, **overrides: Any
) -> CheckpointMetadata:
    """Valid metadata for ``arch``: ``input_size`` square images with ``channels`` channels, ``num_classes`` labels.

    Preprocessing resizes straight to ``input_size`` (centre crop of the same size), mean and std 0.5 per channel;
    labels are ``class0``, ``class1``...; training on ``synthetic``; provenance command ``tests``.
    ``overrides`` replace whole fields: ``labels=...``, ``training=TrainingInfo(...)``, ``preprocessing=...``.
    """
    metadata = CheckpointMetadata(
        architecture=ArchitectureSpec(arch, num_classes, channels),
        preprocessing=PreprocessingSpec(
            input_size=input_size,
            channels=channels,
            resize_size=input_size,
            mean=[0.5] * channels,
            std=[0.5] * channels,
        ),
        labels=[f"class{i}" for i in range(num_classes)],
        training=TrainingInfo(dataset="synthetic"),
        provenance=Provenance.now("tests"),
    )
    return replace(metadata, **overrides) if overrides else metadata


def write_checkpoint(
    path: Path,
    arch: str = "resnet20",
    *,
    channels: int = 1,
    input_size: int = 28,
    num_classes: int = 10,
    seed: int = 0,
    **overrides: Any,
) -> Path:
    """A randomly initialised (seeded, untrained) checkpoint at ``path``: tests that need shapes, not accuracy.

    Arguments as in ``make_metadata``; returns the path written.
    """
    torch.manual_seed(seed)
    model = create_model(arch, num_classes=num_classes, in_channels=channels)
    metadata = make_metadata(arch, channels=channels, input_size=input_size, num_classes=num_classes, **overrides)
    return save_checkpoint(model, path, metadata)


@asynccontextmanager
async def running_app(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """``app`` with its lifespan running (models loading in the background), and an in-process client for it."""
    transport = httpx.ASGITransport(app=app)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://test") as client,
    ):
        yield client


def write_version(source: Path, path: Path, note: str) -> Path:
    """``source``'s weights, labels and golden images as a new version (another content hash) at ``path``.

    The answers are the same; only the provenance's command (``note``) differs, as a re-export would.
    """
    model, metadata = load_checkpoint(source)
    provenance = replace(metadata.provenance, command=f"{metadata.provenance.command} # {note}")
    return save_checkpoint(model, path, replace(metadata, provenance=provenance), golden=read_golden(source))


def write_perturbed(source: Path, path: Path, scale: float = 0.5, seed: int = 0) -> Path:
    """A broken retraining of ``source``: its weights with noise of ``scale`` times their spread, its golden set
    (the old answers) kept. A valid file that loads and runs, but answers differently."""
    model, metadata = load_checkpoint(source)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in model.parameters():
            noise = torch.randn(parameter.shape, generator=generator) * parameter.std().nan_to_num(0.1) * scale
            parameter.add_(noise)
    return save_checkpoint(model, path, metadata, golden=read_golden(source))


def write_versions(source: Path, directory: Path) -> dict[str, Path]:
    """``a`` (a copy of ``source``), ``b`` (the same answers, another version) and ``bad`` (perturbed weights)."""
    a = directory / "a.safetensors"
    shutil.copy(source, a)
    return {
        "a": a,
        "b": write_version(a, directory / "b.safetensors", "retrained"),
        "bad": write_perturbed(a, directory / "bad.safetensors"),
    }


def replace_file(source: Path, target: Path) -> None:
    """Copy ``source`` over ``target`` atomically (a temporary name, then a rename), as operators should."""
    temporary = target.with_name(f".{target.name}.tmp")
    shutil.copy(source, temporary)
    temporary.replace(target)
