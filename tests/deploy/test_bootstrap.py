"""The two commands (./serve, ./test), their uv bootstrap, and .ci/run: run for real with stand-ins
for uv, python3 and apt-get on PATH, so no network and no install happen."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest
from deploy_files import ROOT

SCRIPTS = ["serve", "test", "scripts/uv", ".ci/run"]
SYSTEM_PATH = "/usr/bin:/bin"


def stub(directory: Path, name: str, body: str) -> Path:
    """An executable shell script `name` in `directory`."""
    path = directory / name
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return path


def run(command: list[str], path: str, tmp_path: Path) -> subprocess.CompletedProcess:
    env = {"PATH": path, "HOME": str(tmp_path / "home"), "XDG_CACHE_HOME": str(tmp_path / "cache")}
    return subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)


@pytest.fixture
def fake_uv(tmp_path) -> Path:
    """A uv that logs its arguments and exits with $FAKE_UV_EXIT (read from a file)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "uv.log"
    stub(bin_dir, "uv", f'echo "$*" >> {log}\nexit "$(cat {tmp_path}/uv.exit 2>/dev/null || echo 0)"\n')
    return bin_dir


@pytest.mark.parametrize("script", SCRIPTS)
def test_scripts_are_executable_with_valid_syntax(script):
    path = ROOT / script
    assert os.access(path, os.X_OK), f"{script} is not executable"
    shebang = path.read_text().splitlines()[0]
    shell = "bash" if "bash" in shebang else "sh"
    assert shebang in ("#!/bin/sh", "#!/usr/bin/env bash")
    subprocess.run([shell, "-n", str(path)], check=True)


def test_serve_runs_resnet_serve_on_localhost_8000_through_the_locked_env(fake_uv, tmp_path):
    result = run([str(ROOT / "serve"), "--device", "cpu"], f"{fake_uv}:{SYSTEM_PATH}", tmp_path)
    assert result.returncode == 0, result.stderr
    args = (tmp_path / "uv.log").read_text().split()
    assert args[:3] == ["run", "--locked", "resnet-serve"]
    assert args[3:] == ["--host", "127.0.0.1", "--port", "8000", "--weights-dir", "weights", "--device", "cpu"]


def test_test_runs_pytest_and_passes_arguments_and_exit_status(fake_uv, tmp_path):
    (tmp_path / "uv.exit").write_text("5")
    result = run([str(ROOT / "test"), "tests/deploy", "-x"], f"{fake_uv}:{SYSTEM_PATH}", tmp_path)
    assert result.returncode == 5, "pytest's status (5: no tests collected) must come through"
    assert (tmp_path / "uv.log").read_text().split() == ["run", "--locked", "pytest", "tests/deploy", "-x"]


def test_uv_bootstrap_installs_uv_from_pypi_when_missing(tmp_path):
    """No uv on PATH: scripts/uv makes a venv, pip-installs uv into it, then runs that uv."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "calls.log"
    # python3 -m venv DIR  -> DIR/bin/python, whose `-m pip install ... uv` writes DIR/bin/uv.
    venv_python = (
        f'echo "venv-python $*" >> {log}\n'
        'here=$(dirname "$0")\n'
        f'printf \'#!/bin/sh\\necho "bootstrapped-uv $*" >> {log}\\n\' > "$here/uv"\n'
        'chmod +x "$here/uv"\n'
    )
    stub(
        bin_dir,
        "python3",
        f'echo "python3 $*" >> {log}\n'
        '[ "$1 $2" = "-m venv" ] || exit 1\n'
        'mkdir -p "$3/bin"\n'
        f"cat > \"$3/bin/python\" <<'EOS'\n#!/bin/sh\n{venv_python}EOS\n"
        'chmod +x "$3/bin/python"\n',
    )
    for tool in ("sh", "dirname", "mkdir", "chmod", "cat", "printf", "echo"):
        if found := shutil.which(tool, path=SYSTEM_PATH):
            os.symlink(found, bin_dir / tool)
    result = run([str(ROOT / "scripts/uv"), "--version"], str(bin_dir), tmp_path)
    assert result.returncode == 0, result.stderr
    calls = log.read_text().splitlines()
    assert calls[0].startswith("python3 -m venv ")
    assert calls[1].startswith("venv-python -m pip install") and calls[1].endswith(" uv")
    assert calls[2] == "bootstrapped-uv --version"
    # Second call: the bootstrapped uv is reused, nothing installed again.
    log.write_text("")
    run([str(ROOT / "scripts/uv"), "sync"], str(bin_dir), tmp_path)
    assert log.read_text().splitlines() == ["bootstrapped-uv sync"]


@pytest.mark.skipif(os.geteuid() != 0, reason=".ci/run installs system packages only as root")
@pytest.mark.parametrize("pytest_exit", [0, 1, 5])
def test_ci_run_installs_system_packages_then_fails_exactly_when_the_tests_do(fake_uv, tmp_path, pytest_exit):
    apt_log = tmp_path / "apt.log"
    stub(fake_uv, "apt-get", f'echo "$*" >> {apt_log}\n')
    (tmp_path / "uv.exit").write_text(str(pytest_exit))
    result = run(["bash", str(ROOT / ".ci/run")], f"{fake_uv}:{SYSTEM_PATH}", tmp_path)
    assert result.returncode == pytest_exit
    apt = apt_log.read_text().splitlines()
    assert apt[0].startswith("update")
    assert "install" in apt[1]
    assert {"dataset-fashion-mnist", "wrk", "chromium", "chromium-driver"} <= set(apt[1].split())
    assert {"podman", "runc", "debootstrap"} <= set(apt[1].split()), "the image test's tools (test_image.py)"
    assert (tmp_path / "uv.log").read_text().split()[:3] == ["run", "--locked", "pytest"]
