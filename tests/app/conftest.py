"""Fixtures for the service's unit tests: tiny checkpoints and the specs they carry."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from factories import write_checkpoint

from models import PreprocessingSpec


@pytest.fixture(scope="session")
def gray_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """1-channel 28x28, 10 classes."""
    return write_checkpoint(tmp_path_factory.mktemp("weights") / "gray.safetensors")


@pytest.fixture(scope="session")
def rgb_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """3-channel 32x32, 5 classes."""
    return write_checkpoint(
        tmp_path_factory.mktemp("weights") / "rgb.safetensors", channels=3, input_size=32, num_classes=5
    )


@pytest.fixture
def gray_spec() -> PreprocessingSpec:
    return PreprocessingSpec(input_size=28, channels=1, resize_size=32)


@pytest.fixture
def rgb_spec() -> PreprocessingSpec:
    return PreprocessingSpec(input_size=32, channels=3, resize_size=36, mean=[0.5] * 3, std=[0.5] * 3)


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread() -> Iterator[None]:
    """Tiny models on a shared CI machine: one intra-op thread is faster and steadier."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
