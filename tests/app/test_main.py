"""app.main: ``create_app``'s lifespan (device check, scan, background loading, hooks, shutdown)."""

from __future__ import annotations

import asyncio
import shutil
import time
from pathlib import Path

import pytest
import torch
from factories import running_app

from app.main import create_app
from app.registry import ModelRegistry, StartupError
from app.service import ModelState
from app.settings import Settings


def settings(weights: Path, **overrides: object) -> Settings:
    values: dict = {"device": "cpu", "torch_threads": 1, "workers": 1, "max_batch_size": 2, **overrides}
    return Settings(weights_dir=weights, **values)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this host has CUDA: nothing to refuse")
def test_startup_refuses_a_cuda_device_on_a_host_without_cuda(tmp_path: Path, gray_checkpoint: Path) -> None:
    shutil.copy(gray_checkpoint, tmp_path / "gray.safetensors")
    app = create_app(settings(tmp_path, device="cuda"))

    async def main() -> None:
        async with app.router.lifespan_context(app):
            pass

    with pytest.raises(StartupError, match="CUDA is not available"):
        asyncio.run(main())


def test_models_load_in_the_background_then_ready_and_stop_at_shutdown(tmp_path: Path, gray_checkpoint: Path) -> None:
    shutil.copy(gray_checkpoint, tmp_path / "gray.safetensors")
    ready_calls: list[bool] = []
    fatal: list[str] = []
    app = create_app(settings(tmp_path), on_fatal=fatal.append, on_ready=lambda: ready_calls.append(True))
    registry: ModelRegistry = app.state.registry

    async def main() -> None:
        async with running_app(app) as client:
            deadline = time.monotonic() + 60
            while not registry.ready:
                assert registry.state == "starting" and time.monotonic() < deadline
                assert (await client.get("/ready")).status_code == 503
                await asyncio.sleep(0.01)
            assert ready_calls == [True] and not fatal
            assert (await client.get("/ready")).json() == {"status": "ready", "models": ["gray"]}
            info = (await client.get("/models/gray")).json()
            assert info["state"] == "ready" and len(info["version"]) == 16 and info["loaded_at"]
        assert registry.services["gray"].state == ModelState.STOPPED

    asyncio.run(main())
