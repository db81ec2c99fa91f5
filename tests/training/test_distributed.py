"""Multi-process training under torchrun: 2 CPU processes with the gloo backend."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from models import load_checkpoint


def test_torchrun_two_processes_shard_the_data_and_only_rank_zero_writes(tmp_path: Path) -> None:
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent)) or "torchrun"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [
        torchrun,
        "--nproc_per_node=2",
        "--standalone",
        "-m",
        "training",
        "--dataset",
        "synthetic",
        "--limit",
        "256",
        "--epochs",
        "2",
        "--batch-size",
        "32",
        "--arch",
        "resnet20",
        "--output-dir",
        str(tmp_path),
        "--name",
        "ddp",
        "--no-progress",
        "--device",
        "cpu",
    ]
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert summary["world_size"] == 2
    assert done.stdout.count("epoch   1/2") == 1  # rank 1 prints nothing
    history = json.loads((tmp_path / "history.json").read_text())
    assert [row["epoch"] for row in history] == [1, 2]
    # Each epoch covers the 256 training images once across both processes (128 each), not twice.
    assert [row["train_images"] for row in history] == [256, 256]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["curves.png", "ddp.safetensors", "history.json", "last.pt"]
    model, meta = load_checkpoint(tmp_path / "ddp.safetensors")
    assert meta.training.args["arch"] == "resnet20" and not model.training
