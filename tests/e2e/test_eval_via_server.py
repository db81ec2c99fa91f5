"""``resnet-eval --via-server``: the shipped model served agrees with itself in process; skew and errors are found."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from safetensors import safe_open
from safetensors.torch import save_file
from serve_helpers import ServerProcess, free_port

from training.evaluate import cli

SHIPPED = Path(__file__).resolve().parents[2] / "weights" / "resnet20-fashion-mnist.safetensors"
ARGS = ["--torch-threads", "1", "--workers", "1", "--max-batch-size", "8"]


def _perturbed_copy(directory: Path) -> Path:
    """The shipped checkpoint, metadata and all, with one output bias raised: the served model leans to T-shirt/top."""
    directory.mkdir()
    with safe_open(SHIPPED, "pt") as handle:
        tensors = {key: handle.get_tensor(key) for key in handle.keys()}  # noqa: SIM118  (safe_open is no dict)
        metadata = handle.metadata()
    tensors["fc.bias"][0] += 4.0
    save_file(tensors, directory / SHIPPED.name, metadata=metadata)
    return directory


@pytest.fixture(scope="module")
def servers(start_server, tmp_path_factory: pytest.TempPathFactory) -> dict[str, ServerProcess]:
    """A server of the shipped checkpoint and one of a perturbed copy under the same name, started together.

    Both run ``--optimize off`` (tests/conftest.py): fp32 eager, the in-process model's own arithmetic.
    """
    shipped = tmp_path_factory.mktemp("shipped")
    shutil.copy(SHIPPED, shipped / SHIPPED.name)
    perturbed = _perturbed_copy(tmp_path_factory.mktemp("perturbed") / "weights")
    started = {
        name: start_server(["--weights-dir", str(d), *ARGS])
        for name, d in [("shipped", shipped), ("perturbed", perturbed)]
    }
    for server in started.values():
        server.wait_ready(timeout=180)
    return started


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Fashion-MNIST unpacked once for the module."""
    return tmp_path_factory.mktemp("data")


def _eval(server: ServerProcess, data_dir: Path, limit: int, capsys: pytest.CaptureFixture) -> tuple[int, dict]:
    argv = [str(SHIPPED), "--dataset", "fashion-mnist", "--data-dir", str(data_dir), "--limit", str(limit)]
    status = cli([*argv, "--device", "cpu", "--via-server", server.url, "--concurrency", "4", "--json"])
    return status, json.loads(capsys.readouterr().out)


def test_the_shipped_model_gives_the_same_answers_served_as_in_process(
    servers: dict[str, ServerProcess], data_dir: Path, capsys: pytest.CaptureFixture
) -> None:
    status, result = _eval(servers["shipped"], data_dir, 300, capsys)
    report = result["via_server"]
    assert status == 0
    assert result["images"] == report["images"] == 300
    assert report["accuracy"] == report["in_process_accuracy"] == result["accuracy"]
    assert report["differing"] == 0 and report["first_differences"] == [] and not report["skew"]
    assert report["model"] == SHIPPED.stem and report["variant"] == "eager" and report["version"]


def test_a_served_model_with_other_weights_is_reported_as_skew(
    servers: dict[str, ServerProcess], data_dir: Path, capsys: pytest.CaptureFixture
) -> None:
    status, result = _eval(servers["perturbed"], data_dir, 200, capsys)
    report = result["via_server"]
    assert status == 1 and report["skew"]
    assert report["differing"] > 2 and report["in_process_right_server_wrong"] > 0
    assert len(report["first_differences"]) == min(report["differing"], 10)
    assert {d["served"] for d in report["first_differences"]} == {"T-shirt/top"}
    assert all(d["in_process"] != "T-shirt/top" for d in report["first_differences"])


def test_an_unreachable_server_is_one_line_and_exit_status_2(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    argv = [str(SHIPPED), "--dataset", "fashion-mnist", "--data-dir", str(tmp_path), "--limit", "10"]
    assert cli([*argv, "--device", "cpu", "--via-server", url]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"resnet-eval: error: cannot reach {url}")
