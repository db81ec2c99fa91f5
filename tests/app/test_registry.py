"""app.registry: scanning the weights directory, startup failures, loading and serving."""

from __future__ import annotations

import asyncio
import io
import shutil
import time
from pathlib import Path

import pytest
from PIL import Image

from app.errors import NotReady, UnknownModel
from app.metrics import Metrics
from app.registry import ModelRegistry, StartupError
from app.settings import Settings


def registry(weights: Path, **overrides) -> ModelRegistry:
    settings = Settings(weights_dir=weights, device="cpu", torch_threads=1, workers=1, max_batch_size=4, **overrides)
    return ModelRegistry(settings, Metrics())


@pytest.fixture
def weights(tmp_path: Path, gray_checkpoint: Path, rgb_checkpoint: Path) -> Path:
    shutil.copy(gray_checkpoint, tmp_path / "gray.safetensors")
    shutil.copy(rgb_checkpoint, tmp_path / "rgb.safetensors")
    (tmp_path / "broken.safetensors").write_bytes(b"nope")
    return tmp_path


def test_scan_skips_broken_files_and_picks_the_first_as_default(weights: Path) -> None:
    reg = registry(weights)
    reg.scan()
    assert list(reg.paths) == ["gray", "rgb"]
    assert reg.default == "gray"
    assert "broken" in reg.failures and "safetensors" in reg.failures["broken"]


def test_scan_failures(weights: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    with pytest.raises(StartupError, match="--strict"):
        registry(weights, strict=True).scan()
    with pytest.raises(StartupError, match="no loadable"):
        registry(tmp_path_factory.mktemp("empty")).scan()
    with pytest.raises(StartupError, match="nope"):
        registry(weights, default_model="nope").scan()
    with pytest.raises(StartupError, match="CUDA"):
        if __import__("torch").cuda.is_available():
            raise StartupError("CUDA present: nothing to check")
        ModelRegistry(Settings(weights_dir=weights, device="cuda"), Metrics()).scan()


def test_load_warm_and_classify(weights: Path) -> None:
    png = io.BytesIO()
    Image.new("RGB", (30, 30), (10, 20, 30)).save(png, "PNG")

    async def main() -> None:
        reg = registry(weights, default_model="rgb")
        reg.scan()
        with pytest.raises(NotReady):
            reg.get(None)  # scanned, not loaded yet
        fatal: list[str] = []
        reg.start(on_fatal=fatal.append)
        while reg.state == "starting":
            await asyncio.sleep(0.01)
        assert reg.ready and not fatal
        assert sorted(reg.models) == ["gray", "rgb"]
        assert 1 <= reg.models["rgb"].engine.batch_cap <= 4
        with pytest.raises(UnknownModel):
            reg.get("broken")
        trace: dict = {}
        preds = await reg.classify(reg.get(None), png.getvalue(), 3, time.monotonic() + 10, trace)
        assert len(preds) == 3 and trace["batch_size"] == 1 and "preprocess_ms" in trace
        reg.drain()
        assert reg.state == "draining" and not reg.ready
        await reg.close()

    asyncio.run(main())
