"""The server's footprint: resident memory and open file descriptors summed over its process tree
(``--processes N`` runs workers under a supervisor), and its ``resnet_serve_rejected_total`` by reason.

The process tree comes from ``bench.cpu.process_tree``; a process that exits between listing and
reading counts as zero.
"""

from __future__ import annotations

import os

from prometheus_client.parser import text_string_to_metric_families

__all__ = ["open_fds", "rejected", "rss_mb"]

REJECTED = "resnet_serve_rejected"  # the family; its samples are ``resnet_serve_rejected_total``


def _vm_rss_kb(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            line = next((ln for ln in f if ln.startswith("VmRSS:")), "VmRSS: 0 kB")
    except (FileNotFoundError, ProcessLookupError):
        return 0
    return int(line.split()[1])


def rss_mb(pids: list[int]) -> float:
    """Sum of VmRSS over ``pids``, in MB (10^6 bytes)."""
    return sum(_vm_rss_kb(pid) for pid in pids) * 1024 / 1e6


def open_fds(pids: list[int]) -> int:
    """Open file descriptors of ``pids`` together (entries of /proc/<pid>/fd)."""
    total = 0
    for pid in pids:
        try:
            total += len(os.listdir(f"/proc/{pid}/fd"))
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
    return total


def rejected(metrics_text: str) -> dict[str, int]:
    """``resnet_serve_rejected_total`` by ``reason`` from a /metrics page (every reason it lists)."""
    counts: dict[str, int] = {}
    for family in text_string_to_metric_families(metrics_text):
        if family.name == REJECTED:
            for sample in family.samples:
                if sample.name == f"{REJECTED}_total":
                    counts[sample.labels["reason"]] = int(sample.value)
    return counts
