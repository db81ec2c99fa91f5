"""Real faults for tests: a file-size limit, a full tmpfs, a checkpoint whose tensor data is cut short.

Any test imports them as ``from faults import ...`` (see tests/conftest.py). No monkeypatching: the
kernel refuses the writes, and the cut checkpoint is a real file on disk.
"""

from __future__ import annotations

import os
import resource
import signal
import struct
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

__all__ = ["cap_file_size", "cut_tensor_data", "file_size_limit", "small_tmpfs"]


def cap_file_size(limit: int) -> None:
    """From now on a write past ``limit`` bytes fails with EFBIG (an ``OSError``) instead of killing the process.

    Meant for ``subprocess``'s ``preexec_fn``: ``preexec_fn=partial(cap_file_size, 65536)``.
    """
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))


@contextmanager
def file_size_limit(limit: int) -> Iterator[None]:
    """``cap_file_size(limit)`` for this process while the block runs; the old limit and signal handler after."""
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    handler = signal.getsignal(signal.SIGXFSZ)
    cap_file_size(limit)
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, handler)


@contextmanager
def small_tmpfs(mount_point: Path, size: int) -> Iterator[Path]:
    """A tmpfs of ``size`` bytes mounted at ``mount_point`` (created) for the block: writing past it is ENOSPC.

    Skips the test where mounting is not permitted (not root, or a container without CAP_SYS_ADMIN).
    """
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs (a real full disk) needs root")
    mount_point.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mount_point)], capture_output=True, text=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", str(mount_point)], check=True)


def cut_tensor_data(checkpoint: bytes) -> bytes:
    """A safetensors file cut short: its header intact, only the first half of its tensor data left."""
    (header_length,) = struct.unpack("<Q", checkpoint[:8])
    data_start = 8 + header_length
    return checkpoint[: data_start + (len(checkpoint) - data_start) // 2]
