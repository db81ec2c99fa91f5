"""Shared by every test directory.

The test directories are not packages, so pytest (``prepend`` import mode) puts the directory of each
conftest and test file on ``sys.path``: that is how ``tests/e2e`` imports ``serve_helpers``. This file
being here puts ``tests/`` there too, so any test imports the shared helpers as ``from factories import ...``.
"""
