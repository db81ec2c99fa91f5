"""``resnet-eval --via-server``: the shipped model through a real server agrees with itself in process; skew is found."""

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


def _serve(start_server, weights: Path) -> ServerProcess:
    server = start_server(["--weights-dir", str(weights), *ARGS])  # --optimize off (tests/conftest.py): fp32 eager
    server.wait_ready(timeout=120)
    return server


def _eval(server_url: str, data_dir: Path, limit: int, capsys: pytest.CaptureFixture) -> tuple[int, dict]:
    argv = [str(SHIPPED), "--dataset", "fashion-mnist", "--data-dir", str(data_dir), "--limit", str(limit)]
    status = cli([*argv, "--device", "cpu", "--via-server", server_url, "--concurrency", "4", "--json"])
    out = capsys.readouterr().out
    return status, json.loads(out)


def test_the_shipped_model_gives_the_same_answers_served_as_in_process(
    start_server, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    weights = tmp_path / "weights"
    weights.mkdir()
    shutil.copy(SHIPPED, weights / SHIPPED.name)
    server = _serve(start_server, weights)
    status, result = _eval(server.url, tmp_path / "data", 300, capsys)
    report = result["via_server"]
    assert status == 0
    assert result["images"] == report["images"] == 300
    assert report["accuracy"] == report["in_process_accuracy"] == result["accuracy"]
    assert report["differing"] == 0 and report["first_differences"] == [] and not report["skew"]
    assert report["model"] == SHIPPED.stem and report["variant"] == "eager" and report["version"]


def test_a_served_model_with_other_weights_is_reported_as_skew(
    start_server, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    weights = tmp_path / "weights"
    weights.mkdir()
    with safe_open(SHIPPED, "pt") as handle:
        tensors = {key: handle.get_tensor(key) for key in handle.keys()}  # noqa: SIM118  (safe_open is no dict)
        metadata = handle.metadata()
    tensors["fc.bias"][0] += 4.0  # the served model leans to T-shirt/top
    save_file(tensors, weights / SHIPPED.name, metadata=metadata)
    server = _serve(start_server, weights)
    status, result = _eval(server.url, tmp_path / "data", 200, capsys)
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
