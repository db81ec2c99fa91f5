"""app.registry: scanning the weights directory, the default model, lookups and readiness."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from app.errors import NotReady, UnknownModel
from app.registry import ModelRegistry, StartupError


@pytest.fixture
def weights(tmp_path: Path, gray_checkpoint: Path, rgb_checkpoint: Path) -> Path:
    shutil.copy(gray_checkpoint, tmp_path / "gray.safetensors")
    shutil.copy(rgb_checkpoint, tmp_path / "rgb.safetensors")
    (tmp_path / "broken.safetensors").write_bytes(b"nope")
    return tmp_path


def test_scan_skips_broken_files_and_picks_the_first_as_default(weights: Path) -> None:
    registry = ModelRegistry(weights)
    registry.scan()
    assert list(registry.paths) == ["gray", "rgb"]
    assert registry.default == "gray"
    assert "broken" in registry.failures and "safetensors" in registry.failures["broken"]


def test_scan_honours_the_requested_default(weights: Path) -> None:
    registry = ModelRegistry(weights, default_model="rgb")
    registry.scan()
    assert registry.default == "rgb"


def test_scan_failures(weights: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    with pytest.raises(StartupError, match="--strict"):
        ModelRegistry(weights, strict=True).scan()
    with pytest.raises(StartupError, match="no loadable"):
        ModelRegistry(tmp_path_factory.mktemp("empty")).scan()
    with pytest.raises(StartupError, match="nope"):
        ModelRegistry(weights, default_model="nope").scan()


def test_lookups_while_starting_ready_and_draining(weights: Path) -> None:
    registry = ModelRegistry(weights)
    registry.scan()
    with pytest.raises(NotReady, match="still loading"):
        registry.get(None)  # scanned, not loaded yet
    with pytest.raises(UnknownModel):
        registry.get("broken")
    registry.fail("rgb", "RuntimeError: boom")
    with pytest.raises(NotReady, match="failed to load: RuntimeError: boom"):
        registry.get("rgb")
    assert registry.mark_ready() and registry.state == "ready"
    assert not registry.ready  # the default model is not serving
    registry.drain()
    assert registry.state == "draining" and not registry.ready
    assert not registry.mark_ready() and registry.state == "draining"  # a drain during startup stays a drain
