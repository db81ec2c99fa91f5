"""CPU accounting from /proc: cores used by the server (its whole process tree), the load generator,
the harness itself, and everything else on the machine, over one measured interval; and pinning
(``--pin``): which cores the server and the load generator may use.

A point whose "other" column is well above zero was measured while something else ran (a training
job, another test suite): its figures are disturbed, and the report shows it.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["CpuSnapshot", "CpuUsage", "pin_child", "pin_plan", "process_tree", "snapshot", "usage"]

_TICK = os.sysconf("SC_CLK_TCK")


def pin_plan() -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(server cores, load-generator cores) for ``--pin``: the first core for the server, the rest for wrk."""
    cores = sorted(os.sched_getaffinity(0))
    if len(cores) < 2:
        raise ValueError("--pin needs at least 2 cores: one for the server, one for the load generator")
    return (cores[0],), tuple(cores[1:])


def pin_child(cpus: tuple[int, ...] | None) -> Callable[[], None] | None:
    """A ``preexec_fn`` pinning a child process (and all it spawns) to ``cpus``; ``None``: no pinning."""
    if cpus is None:
        return None
    return lambda: os.sched_setaffinity(0, cpus)


def _proc_ticks(pid: int) -> int:
    """utime + stime of one process (its exited children are not included)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return 0
    return int(fields[11]) + int(fields[12])  # fields 14, 15 of stat(5), counted after the ")"


def _machine_ticks() -> tuple[int, int]:
    """(busy, total) jiffies over all CPUs from /proc/stat."""
    with open("/proc/stat") as f:
        values = [int(v) for v in f.readline().split()[1:]]
    idle = values[3] + (values[4] if len(values) > 4 else 0)  # idle + iowait
    total = sum(values[:8])  # guest time is already inside user
    return total - idle, total


def process_tree(root: int) -> list[int]:
    """``root`` and all its descendants (by parent pid), as far as /proc shows them now."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (FileNotFoundError, ProcessLookupError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    tree, stack = [], [root]
    while stack:
        pid = stack.pop()
        tree.append(pid)
        stack.extend(children.get(pid, []))
    return tree


@dataclass
class CpuSnapshot:
    """Tick counters at one instant."""

    wall: float
    server: int
    loadgen: int
    harness: int
    busy: int


@dataclass
class CpuUsage:
    """Cores used on average over an interval (1.0 = one core fully busy)."""

    server: float
    loadgen: float
    harness: float
    other: float
    total: float
    cores: int


def snapshot(server_pids: list[int], loadgen_pid: int | None) -> CpuSnapshot:
    """Counters now; ``server_pids`` should be the server's process tree."""
    busy, _ = _machine_ticks()
    return CpuSnapshot(
        wall=time.monotonic(),
        server=sum(_proc_ticks(pid) for pid in server_pids),
        loadgen=_proc_ticks(loadgen_pid) if loadgen_pid else 0,
        harness=_proc_ticks(os.getpid()),
        busy=busy,
    )


def usage(before: CpuSnapshot, after: CpuSnapshot) -> CpuUsage:
    """Average cores used between two snapshots of the same processes."""
    seconds = max(after.wall - before.wall, 1e-9)

    def cores(ticks: int) -> float:
        return round(max(ticks, 0) / _TICK / seconds, 3)

    server = cores(after.server - before.server)
    loadgen = cores(after.loadgen - before.loadgen)
    harness = cores(after.harness - before.harness)
    total = cores(after.busy - before.busy)
    other = round(max(total - server - loadgen - harness, 0.0), 3)
    return CpuUsage(server, loadgen, harness, other, total, os.cpu_count() or 1)
