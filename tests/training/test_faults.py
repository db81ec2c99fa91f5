"""``resnet-train`` as a real process under real faults: a disk that fills up, a SIGKILL mid-epoch.

A run's outputs are the checkpoint (``m.safetensors``), the resume state (``last.pt``), ``history.json``
and ``curves.png``; each must be the previous epoch's, whole, or the new one, never a part of either.
"""

from __future__ import annotations

import json
import os
import re
import select
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path

import pytest
import torch
from faults import cap_file_size, small_tmpfs

from models import load_checkpoint
from training.train import get_args_parser, main

REPO = Path(__file__).resolve().parents[2]
RUN = ["--arch", "resnet20", "--dataset", "synthetic", "--batch-size", "32", "--device", "cpu", "--workers", "0"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def resnet_train(output_dir: Path, *argv: str) -> list[str]:
    """The command line of a real ``resnet-train`` process writing to ``output_dir``."""
    where = ["--output-dir", str(output_dir), "--name", "m", "--data-dir", str(output_dir.parent / "data")]
    return [sys.executable, "-m", "training", *RUN, *where, *argv]


def snapshot(directory: Path) -> dict[str, bytes]:
    """Every file in ``directory`` (temporary ones included), by name."""
    return {path.name: path.read_bytes() for path in directory.iterdir()}


@pytest.fixture(scope="module")
def first_epoch(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    """The four outputs of a one-epoch run (trained in this process), for the tests to resume for a second."""
    output_dir = tmp_path_factory.mktemp("first-epoch") / "run"
    argv = [*RUN, "--limit", "256", "--epochs", "1", "--no-progress", "--output-dir", str(output_dir), "--name", "m"]
    main(get_args_parser().parse_args(argv))
    return snapshot(output_dir)


@pytest.fixture(params=["disk-full", "file-size-limit"])
def cramped_run(
    request: pytest.FixtureRequest, tmp_path: Path, first_epoch: dict[str, bytes]
) -> Iterator[tuple[Path, Callable[[], None] | None, str]]:
    """A run directory holding epoch 1's files, where epoch 2's cannot be written.

    Yields the directory, the ``preexec_fn`` for ``resnet-train`` and the error it will meet: a tmpfs
    with 256 KiB to spare (ENOSPC), or a 64 KiB limit on the size of any file the process writes (EFBIG).
    """
    run = tmp_path / "run"
    if request.param == "disk-full":
        used = sum(-(-len(data) // 4096) * 4096 for data in first_epoch.values())  # whole pages
        with small_tmpfs(run, used + 256 * 1024):
            for name, data in first_epoch.items():
                (run / name).write_bytes(data)
            yield run, None, "No space left on device"
    else:
        run.mkdir()
        for name, data in first_epoch.items():
            (run / name).write_bytes(data)
        yield run, partial(cap_file_size, 64 * 1024), "File too large"


def test_a_write_failing_in_epoch_2_keeps_epoch_1_and_exits_1_with_one_line(
    tmp_path: Path, first_epoch: dict[str, bytes], cramped_run: tuple[Path, Callable[[], None] | None, str]
) -> None:
    run, preexec, reason = cramped_run
    argv = resnet_train(run, "--limit", "256", "--epochs", "2", "--no-progress", "--resume")
    result = subprocess.run(argv, cwd=REPO, env=ENV, preexec_fn=preexec, capture_output=True, text=True, timeout=300)
    assert result.returncode == 1, result.stderr
    assert re.search(r"^epoch +2/2 ", result.stdout, re.MULTILINE), result.stdout  # it failed saving epoch 2
    error = result.stderr.strip()
    assert "\n" not in error, error  # one line, no traceback
    assert error.startswith(f"resnet-train: error: cannot save epoch 2 in {run}: {reason}; "), error
    assert error.endswith("the files saved before are intact; fix that and continue with --resume"), error
    assert snapshot(run) == first_epoch  # every file as epoch 1 wrote it, and no temporary file left
    load_checkpoint(run / "m.safetensors")
    assert torch.load(run / "last.pt", weights_only=True)["epoch"] == 1

    roomy = shutil.copytree(run, tmp_path / "roomy")  # with room to write, the run goes on
    argv = [*RUN, "--limit", "256", "--epochs", "2", "--no-progress", "--resume", "--output-dir", str(roomy)]
    assert main(get_args_parser().parse_args([*argv, "--name", "m"]))["epochs_run"] == 2


def read_until(process: subprocess.Popen[bytes], text: bytes, timeout: float) -> bytes:
    """Read ``process``'s output until ``text`` appears in it; returns what was read."""
    assert process.stdout is not None
    seen, deadline = b"", time.monotonic() + timeout
    while text not in seen:
        remaining = deadline - time.monotonic()
        if remaining <= 0 or not select.select([process.stdout], [], [], remaining)[0]:
            raise TimeoutError(f"no {text!r} within {timeout} s in:\n{seen.decode(errors='replace')}")
        chunk = os.read(process.stdout.fileno(), 65536)
        if not chunk:
            raise RuntimeError(f"exited with {process.wait()} before {text!r}:\n{seen.decode(errors='replace')}")
        seen += chunk
    return seen


def test_a_run_killed_mid_epoch_resumes_without_repeating_or_skipping_an_epoch(tmp_path: Path) -> None:
    run = tmp_path / "run"
    argv = resnet_train(run, "--limit", "384", "--epochs", "3")
    with subprocess.Popen(argv, cwd=REPO, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT) as process:
        # The progress bar of epoch 2 is drawn once epoch 1's files are all written, before its first step.
        read_until(process, b"epoch 2/3", timeout=300)
        process.send_signal(signal.SIGKILL)
        assert process.wait() == -signal.SIGKILL
    killed_history = json.loads((run / "history.json").read_text())
    assert [row["epoch"] for row in killed_history] == [1]  # killed before epoch 2 was saved
    assert torch.load(run / "last.pt", weights_only=True)["epoch"] == 1

    resumed = subprocess.run(
        [*argv, "--resume", "--no-progress"], cwd=REPO, env=ENV, capture_output=True, text=True, timeout=300
    )
    assert resumed.returncode == 0, resumed.stderr
    out = resumed.stdout
    assert "epochs 2..3" in out
    assert re.findall(r"^epoch +(\d+)/3 ", out, re.MULTILINE) == ["2", "3"]
    history = json.loads((run / "history.json").read_text())
    assert [row["epoch"] for row in history] == [1, 2, 3]
    assert history[0] == killed_history[0]  # epoch 1 is the killed run's, not run again
    assert [row["train_images"] for row in history] == [384, 384, 384]  # each epoch one whole pass
    assert json.loads(out.splitlines()[-1])["epochs_run"] == 3
    model, metadata = load_checkpoint(run / "m.safetensors")
    best = max(history, key=lambda row: row["test_accuracy"])
    assert (metadata.training.best_epoch, metadata.training.test_accuracy) == (best["epoch"], best["test_accuracy"])
    assert model(torch.zeros(2, 1, 28, 28)).shape == (2, 10)
