"""app.registry: scanning the weights directory, the default model, lookups and readiness."""

from __future__ import annotations

import multiprocessing
import shutil
from pathlib import Path

import pytest

from app.errors import NotReady, UnknownModel
from app.registry import ModelRegistry, ReadinessBoard, StartupError


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
    with pytest.raises(NotReady, match="'broken' failed to load"):
        registry.get("broken")  # listed under failed, so not unknown
    with pytest.raises(UnknownModel):
        registry.get("nope")
    registry.fail("rgb", "RuntimeError: boom in /srv/secret/rgb.safetensors")
    with pytest.raises(NotReady, match="'rgb' failed to load") as failed:
        registry.get("rgb")
    assert "boom" not in failed.value.detail and "/srv" not in failed.value.detail, "the reason is for the log"
    assert registry.mark_ready() and registry.state == "ready"
    assert not registry.ready  # the default model is not serving
    registry.drain()
    assert registry.state == "draining" and not registry.ready
    assert not registry.mark_ready() and registry.state == "draining"  # a drain during startup stays a drain


def test_each_phase_change_is_reported(weights: Path) -> None:
    phases: list[str] = []
    registry = ModelRegistry(weights, on_phase=phases.append)
    registry.scan()
    assert registry.mark_ready()
    registry.drain()
    registry.mark_failed("boom")
    assert phases == ["ready", "draining", "failed"]


def test_readiness_board_holds_one_phase_per_worker() -> None:
    board = ReadinessBoard(multiprocessing.get_context("spawn"), 3)
    assert len(board) == 3 and board.not_ready() == {0: "starting", 1: "starting", 2: "starting"}
    board.set(0, "ready")
    board.set(2, "ready")
    assert board.phase(0) == "ready" and board.not_ready() == {1: "starting"}
    board.set(1, "ready")
    board.set(2, "draining")
    assert board.not_ready() == {2: "draining"}
