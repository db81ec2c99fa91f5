"""app.routes.ops: ``/ready`` of a worker of ``--processes``, which needs every worker ready."""

from __future__ import annotations

import asyncio
import multiprocessing
import shutil
import time
from functools import partial
from pathlib import Path

from factories import running_app

from app.main import create_app
from app.registry import ModelRegistry, ReadinessBoard
from app.settings import Settings


def test_ready_needs_every_worker_on_the_board(tmp_path: Path, gray_checkpoint: Path) -> None:
    shutil.copy(gray_checkpoint, tmp_path / "gray.safetensors")
    settings = Settings(weights_dir=tmp_path, device="cpu", torch_threads=1, workers=1, max_batch_size=2)
    app = create_app(settings)
    registry: ModelRegistry = app.state.registry
    board = ReadinessBoard(multiprocessing.get_context("spawn"), 2)
    app.state.board = board  # as app.cli.serve does for worker 0
    registry.on_phase = partial(board.set, 0)

    async def main() -> None:
        async with running_app(app) as client:
            deadline = time.monotonic() + 60
            while not registry.ready:
                assert time.monotonic() < deadline
                await asyncio.sleep(0.01)
            assert board.phase(0) == "ready"
            waiting = await client.get("/ready")
            assert waiting.status_code == 503
            assert waiting.json() == {"detail": "worker processes not ready: 1 (starting)"}
            board.set(1, "ready")
            assert (await client.get("/ready")).status_code == 200
            registry.drain()
            assert board.phase(0) == "draining"
            assert (await client.get("/ready")).json() == {"detail": "service is draining"}

    asyncio.run(main())
