"""Fixtures for the deployment tests."""

from __future__ import annotations

import tomllib

import pytest
from deploy_files import ROOT


@pytest.fixture(scope="session")
def pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


@pytest.fixture(scope="session")
def console_scripts(pyproject: dict) -> dict[str, str]:
    return pyproject["project"]["scripts"]


@pytest.fixture(scope="session")
def lock() -> dict:
    return tomllib.loads((ROOT / "uv.lock").read_text())
