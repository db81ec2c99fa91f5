"""``resnet-experiment``: each experiment in a tiny configuration, on real backward passes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from experiments.arch_table import architecture_rows
from experiments.cli import main
from experiments.gradients import gradient_study
from training.datasets import load_data


def test_table_matches_the_papers_flops_and_parameter_counts() -> None:
    rows = {row["name"]: row for row in architecture_rows(["resnet18", "resnet34", "resnet20", "resnet56", "plain56"])}
    assert rows["resnet18"]["gflops"] == pytest.approx(1.8, rel=0.02)
    assert rows["resnet34"]["gflops"] == pytest.approx(3.6, rel=0.03)
    assert rows["resnet20"]["params_m"] == pytest.approx(0.27, rel=0.02)
    assert (rows["resnet56"]["layers"], rows["resnet56"]["blocks_per_stage"]) == (56, [9, 9, 9])
    assert rows["plain56"]["layers"] == 56 and not rows["plain56"]["shortcuts"]


def test_gradient_norms_spread_over_orders_of_magnitude_in_the_deep_plain_net_only() -> None:
    data = load_data("synthetic", data_dir=Path("unused"), limit=32)
    results = gradient_study(data, [56], batch_size=32, steps=1)
    plain, residual = results["plain56"]["init"], results["resnet56"]["init"]
    assert len(plain) == len(residual) == 55  # every main-path convolution
    # With BatchNorm the plain net's gradients explode toward the input; shortcuts keep them within range.
    assert max(plain) / min(plain) > 10 * max(residual) / min(residual)


def test_degradation_command_writes_figure_and_table_with_four_nets(tmp_path: Path) -> None:
    argv = [
        "degradation",
        "--dataset",
        "synthetic",
        "--epochs",
        "1",
        "--fraction",
        "0.25",
        "--batch-size",
        "64",
        "--nets",
        "plain20,resnet20",
        "--output-dir",
        str(tmp_path),
    ]
    assert main(argv) == 0
    results = json.loads((tmp_path / "degradation.json").read_text())
    assert set(results) == {"plain20", "resnet20"}
    assert 0 <= results["plain20"]["curve"][0]["train_error"] <= 1
    assert (tmp_path / "degradation.png").stat().st_size > 10_000
    assert (tmp_path / "degradation.md").read_text().count("| plain20 |") == 1


def test_gradients_command_writes_its_figure(tmp_path: Path) -> None:
    argv = [
        "gradients",
        "--dataset",
        "synthetic",
        "--depths",
        "20",
        "--steps",
        "1",
        "--batch-size",
        "16",
        "--output-dir",
        str(tmp_path),
    ]
    assert main(argv) == 0
    assert set(json.loads((tmp_path / "gradients.json").read_text())) == {"plain20", "resnet20"}
    assert (tmp_path / "gradients.png").stat().st_size > 10_000


def test_unknown_dataset_is_a_one_line_error(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["gradients", "--dataset", "nope", "--output-dir", str(tmp_path)]) == 2
    assert capsys.readouterr().err.startswith("resnet-experiment: error: unknown dataset 'nope'")
