"""Shared by every test directory.

The test directories are not packages, so pytest (``prepend`` import mode) puts the directory of each
conftest and test file on ``sys.path``: that is how ``tests/e2e`` imports ``serve_helpers``. This file
being here puts ``tests/`` there too, so any test imports the shared helpers as ``from factories import ...``.

It also picks the hypothesis profile of the fuzz tests (docs/fuzzing.md): ``ci``, bounded and repeatable, by
default; ``HYPOTHESIS_PROFILE=long`` for thousands of examples per test with fresh randomness. No deadline:
on a shared machine a slow example is no failure; a hang is caught by pytest-timeout.

Servers and services under test run ``--optimize off`` (eager fp32, what the tests compare against) unless a
test asks for another mode: ``RESNET_SERVE_OPTIMIZE`` is set here, before any test builds ``Settings`` or
starts a server process (which inherits the environment).
"""

import os

from hypothesis import HealthCheck, settings

os.environ.setdefault("RESNET_SERVE_OPTIMIZE", "off")

_FUZZ = {"deadline": None, "print_blob": True, "suppress_health_check": [HealthCheck.too_slow]}
settings.register_profile("ci", max_examples=150, derandomize=True, **_FUZZ)
settings.register_profile("long", max_examples=3000, **_FUZZ)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
