"""The shared acceptance check (``../shared/acceptance/contract_check.py``) against a Fashion-MNIST model."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from serve_helpers import REPO, train_checkpoint

CONTRACT = REPO.parent / "shared" / "acceptance" / "contract_check.py"
FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
SHIPPED = REPO / "weights" / "resnet20-fashion-mnist.safetensors"


@pytest.mark.slow
@pytest.mark.skipif(not CONTRACT.is_file(), reason=f"acceptance check not found at {CONTRACT}")
@pytest.mark.skipif(not FASHION_MNIST.is_dir(), reason="Fashion-MNIST (dataset-fashion-mnist) not installed")
def test_contract_check_passes(start_server, tmp_path: Path) -> None:
    weights = tmp_path / "weights"
    weights.mkdir()
    if SHIPPED.is_file():
        shutil.copy(SHIPPED, weights / SHIPPED.name)
    else:  # the shipped model is not committed yet: a short run of the real training code stands in
        trained = train_checkpoint(tmp_path / "run", "resnet20-fashion-mnist", "resnet20", "fashion-mnist", 1000)
        shutil.copy(trained, weights / trained.name)
    server = start_server(["--weights-dir", str(weights), "--max-upload-mb", "5", "--torch-threads", "1"])
    server.wait_ready()
    result = subprocess.run(
        [sys.executable, str(CONTRACT), server.url, "--max-upload-mb", "5"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "contract: 0 failures" in result.stdout
