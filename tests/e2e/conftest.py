"""End-to-end fixtures: checkpoints written by the training code, and real ``resnet-serve`` processes."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from serve_helpers import SHIPPED, SHIPPED_KEY, ServerProcess, train_checkpoint


@pytest.fixture(scope="session")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two synthetic-data checkpoints of different architectures (1-channel 28x28, 10 classes)."""
    runs = tmp_path_factory.mktemp("runs")
    return {
        "alpha": train_checkpoint(runs / "alpha", "alpha", "resnet20"),
        "beta": train_checkpoint(runs / "beta", "beta", "plain20"),
    }


@pytest.fixture(scope="session")
def weights_dir(tmp_path_factory: pytest.TempPathFactory, checkpoints: dict[str, Path]) -> Path:
    """A weights directory with both checkpoints, as an operator would lay it out."""
    directory = tmp_path_factory.mktemp("weights")
    for path in checkpoints.values():
        shutil.copy(path, directory / path.name)
    return directory


@pytest.fixture(scope="session")
def start_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator:
    """A factory: ``start_server(args)`` -> a started (not necessarily ready) server; all stopped at the end."""
    servers: list[ServerProcess] = []
    logs = tmp_path_factory.mktemp("server-logs")

    def start(args: list[str], env: dict[str, str] | None = None) -> ServerProcess:
        server = ServerProcess(args, logs / f"server-{len(servers)}.log", env)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


@pytest.fixture(scope="module")
def shipped_server(start_server, tmp_path_factory: pytest.TempPathFactory) -> ServerProcess:
    """A ready server of the shipped model alone, behind ``SHIPPED_KEY``; one per test module."""
    weights = tmp_path_factory.mktemp("shipped")
    (weights / SHIPPED.name).write_bytes(SHIPPED.read_bytes())
    srv = start_server(["--weights-dir", str(weights), "--api-key", SHIPPED_KEY, "--torch-threads", "1"])
    srv.wait_ready()
    return srv
