"""Checkpoints cut short on disk, before and after a real ``resnet-serve`` process loaded them.

A checkpoint "cut short" keeps its header (name, architecture, labels) and loses the second half of its
tensor data, as a copy interrupted by a full disk or a crash leaves it.
"""

from __future__ import annotations

import os
from pathlib import Path

import httpx
import pytest
from faults import cut_tensor_data
from serve_helpers import ServerProcess, png_bytes

from app.registry import LOAD_FAILED


@pytest.fixture(scope="module")
def weights(weights_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """alpha and beta, good; cut, a copy of beta cut short."""
    directory = tmp_path_factory.mktemp("weights-with-cut")
    for name in ("alpha", "beta"):
        (directory / f"{name}.safetensors").write_bytes((weights_dir / f"{name}.safetensors").read_bytes())
    (directory / "cut.safetensors").write_bytes(cut_tensor_data((weights_dir / "beta.safetensors").read_bytes()))
    return directory


@pytest.fixture(scope="module")
def server(start_server, weights: Path) -> ServerProcess:
    """Serving alpha (the default) and beta; cut failed. Not --strict."""
    srv = start_server(["--weights-dir", str(weights), "--default-model", "alpha", "--torch-threads", "1"])
    srv.wait_ready()
    return srv


def predict(server: ServerProcess, model: str) -> httpx.Response:
    return httpx.post(
        f"{server.url}/predict?model={model}", files={"file": ("a.png", png_bytes(90), "image/png")}, timeout=30
    )


def test_the_good_models_serve_and_models_lists_the_cut_one_as_failed(server: ServerProcess) -> None:
    assert server.get("/ready").status_code == 200
    assert predict(server, "alpha").status_code == 200
    assert predict(server, "beta").status_code == 200
    body = server.get("/models").json()
    assert sorted(model["name"] for model in body["models"]) == ["alpha", "beta"]
    assert list(body["failed"]) == ["cut"]
    assert body["failed"]["cut"] == LOAD_FAILED  # the reason is in the log, not for clients
    assert any(r.get("model") == "cut" and "truncated" in r.get("reason", "") for r in server.records())


def test_a_request_naming_the_cut_checkpoint_gets_503_saying_it_failed_to_load(server: ServerProcess) -> None:
    response = predict(server, "cut")
    assert response.status_code == 503, response.text
    assert response.json()["detail"] == f"model 'cut' {LOAD_FAILED}"
    assert server.get("/models/cut").status_code == 503


def test_a_served_checkpoint_cut_or_replaced_on_disk_keeps_serving(server: ServerProcess, weights: Path) -> None:
    path = weights / "beta.safetensors"
    version = server.get("/models/beta").json()["version"]
    expected = predict(server, "beta").json()
    os.truncate(path, len(cut_tensor_data(path.read_bytes())))  # in place: same inode, as a crashed copy leaves it
    assert predict(server, "beta").json() == expected
    replacement = weights / "beta.partial"
    replacement.write_bytes(b"\x00" * 64)
    os.replace(replacement, path)  # a new file under the name, as a broken deploy leaves it
    assert predict(server, "beta").json() == expected
    assert server.get("/models/beta").json()["version"] == version
    assert server.get("/ready").status_code == 200
    assert server.proc.poll() is None and "Traceback" not in server.log()


@pytest.mark.parametrize(
    "broken", [pytest.param(b"\x00" * 64, id="garbage"), pytest.param(None, id="tensor-data-cut-short")]
)
def test_strict_startup_with_a_broken_checkpoint_exits_1_naming_it(
    start_server, weights_dir: Path, tmp_path: Path, broken: bytes | None
) -> None:
    alpha = (weights_dir / "alpha.safetensors").read_bytes()
    (tmp_path / "alpha.safetensors").write_bytes(alpha)
    (tmp_path / "bad.safetensors").write_bytes(broken if broken is not None else cut_tensor_data(alpha))
    server = start_server(["--weights-dir", str(tmp_path), "--strict"])
    assert server.proc.wait(60) == 1, server.log()
    critical = [record["msg"] for record in server.records() if record["level"] == "critical"]
    assert len(critical) == 1, server.log()
    assert critical[0].startswith("startup failed: --strict: checkpoint 'bad' failed: ")
    assert str(tmp_path / "bad.safetensors") in critical[0]
