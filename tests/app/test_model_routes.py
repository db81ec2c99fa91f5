"""app.routes.models: what ``/models`` tells a client, with and without the API key."""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path

import httpx
import pytest
from factories import running_app, write_checkpoint

from app.main import create_app
from app.registry import LOAD_FAILED, ModelRegistry
from app.settings import Settings
from models import Provenance, TrainingInfo

COMMAND = "resnet-train --data-dir /home/alice/data --output-dir /home/alice/runs"
KEY = "k3y"


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``gray``, trained (says its metadata) from paths on someone's machine, and a broken checkpoint."""
    directory = tmp_path_factory.mktemp("weights")
    write_checkpoint(
        directory / "gray.safetensors",
        training=TrainingInfo(dataset="synthetic", args={"data_dir": "/home/alice/data", "lr": 0.1}),
        provenance=Provenance(created="2026-01-01T00:00:00+00:00", command=COMMAND, versions={"torch": "2"}),
    )
    (directory / "broken.safetensors").write_bytes(b"not a checkpoint")
    return directory


def get(weights: Path, paths: list[str], api_key: str | None, headers: dict[str, str]) -> list[httpx.Response]:
    """``GET`` each path of a started app (every model warm) with ``headers``."""
    settings = Settings(
        weights_dir=weights, device="cpu", torch_threads=1, workers=1, max_batch_size=2, api_key=api_key
    )
    app = create_app(settings)
    registry: ModelRegistry = app.state.registry

    async def main() -> list[httpx.Response]:
        async with running_app(app) as client:
            deadline = time.monotonic() + 60
            while not registry.ready:
                assert time.monotonic() < deadline, "not ready within 60 s"
                await asyncio.sleep(0.01)
            return [await client.get(path, headers=headers) for path in paths]

    return asyncio.run(main())


def test_without_an_api_key_configured_the_training_command_and_paths_are_redacted(weights: Path) -> None:
    listing, one = get(weights, ["/models", "/models/gray"], None, {})
    assert listing.status_code == one.status_code == 200
    for info in (listing.json()["models"][0], one.json()):
        assert info["metadata"]["provenance"]["command"] == "[redacted]"
        assert info["metadata"]["training"]["args"] == {}
        assert info["redacted"] == ["metadata.provenance.command", "metadata.training.args"]
        assert info["metadata"]["training"]["dataset"] == "synthetic" and info["metadata"]["labels"]
    assert "/home/alice" not in listing.text + one.text


def test_a_request_with_the_api_key_sees_the_training_command_and_arguments(weights: Path) -> None:
    [unauthorized] = get(weights, ["/models/gray"], KEY, {})
    assert unauthorized.status_code == 401
    listing, one = get(weights, ["/models", "/models/gray"], KEY, {"Authorization": f"Bearer {KEY}"})
    for info in (listing.json()["models"][0], one.json()):
        assert info["metadata"]["provenance"]["command"] == COMMAND
        assert info["metadata"]["training"]["args"] == {"data_dir": "/home/alice/data", "lr": 0.1}
        assert info["redacted"] == []


def test_a_failed_checkpoint_is_listed_without_its_reason_which_is_logged(
    weights: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="app.registry")
    [listing] = get(weights, ["/models"], None, {})
    assert listing.json()["failed"] == {"broken": LOAD_FAILED}
    [skipped] = [r for r in caplog.records if getattr(r, "model", None) == "broken"]
    reason: str = skipped.reason  # type: ignore[attr-defined]
    assert reason and reason not in listing.text
