"""A soak's records -> its verdict, a Markdown table and a PNG of throughput, latency, RSS and fds over time."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from bench.soak_load import OUTCOMES

__all__ = ["FAILURES", "Thresholds", "markdown", "plot", "verdict", "write"]

#: Outcomes that fail a soak whenever one occurs.
FAILURES = ("5xx", "transport", "unexpected_status", "wrong_answer")


@dataclass(frozen=True)
class Thresholds:
    """Growth beyond these fails the soak (``rising_mb_per_min`` only warns)."""

    max_rss_growth_mb: float = 100.0
    max_fd_growth: int = 64
    rising_mb_per_min: float = 1.0


def _slope_mb_per_min(records: list[dict[str, Any]]) -> float | None:
    """Least-squares slope of RSS over time; ``None`` for fewer than three points."""
    if len(records) < 3:
        return None
    minutes = np.array([r["t_s"] for r in records]) / 60
    return float(np.polyfit(minutes, [r["rss_mb"] for r in records], 1)[0])


def verdict(records: list[dict[str, Any]], limits: Thresholds, server_exit: int | None = None) -> dict[str, Any]:
    """Failures (any 5xx, transport error, unexpected status or wrong answer; growth over the limits; the
    server exiting) and the growth figures, from the first interval after warm-up to the last."""
    totals = {k: sum(r["responses"][k] for r in records) for k in OUTCOMES}
    steady = [r for r in records if not r["warmup"]] or records[-1:]
    first, last = steady[0], steady[-1]
    rss_growth = last["rss_mb"] - first["rss_mb"]
    fd_growth = last["fds"] - first["fds"]
    slope = _slope_mb_per_min(steady[len(steady) // 2 :])
    failures = [f"{totals[k]} {k}" for k in FAILURES if totals[k]]
    if server_exit is not None:
        failures.append(f"the server exited with status {server_exit}")
    if rss_growth > limits.max_rss_growth_mb:
        failures.append(f"RSS grew {rss_growth:.1f} MB (limit {limits.max_rss_growth_mb:g})")
    if fd_growth > limits.max_fd_growth:
        failures.append(f"open fds grew by {fd_growth} (limit {limits.max_fd_growth})")
    rising = slope is not None and slope > limits.rising_mb_per_min
    warnings = [f"RSS still rising: {slope:.2f} MB/min over the second half"] if rising else []
    return {
        "passed": not failures,
        "failures": failures,
        "warnings": warnings,
        "totals": totals,
        "rss_first_mb": round(first["rss_mb"], 1),
        "rss_last_mb": round(last["rss_mb"], 1),
        "rss_growth_mb": round(rss_growth, 1),
        "rss_growth_pct": round(100 * rss_growth / max(first["rss_mb"], 1e-9), 1),
        "rss_slope_second_half_mb_per_min": None if slope is None else round(slope, 3),
        "rss_rising": rising,
        "fds_first": first["fds"],
        "fds_last": last["fds"],
        "fd_growth": fd_growth,
    }


def _ms(value: float | None) -> str:
    return "" if value is None else f"{value:.1f}"


def markdown(results: dict[str, Any]) -> str:
    """The per-interval table and the verdict."""
    m, v = results["machine"], results["verdict"]
    lines = [
        f"# Soak: {results['workload']} ({results['config']['device']})",
        "",
        f"{m['host']}, {m['cpu']} ({m['cores']} cores), {m['date']}, commit {m['commit']}",
        "",
        f"`{m['command']}`",
        "",
        f"Closed loop at concurrency {results['config']['concurrency']}; each cycle of {len(results['mix'])} requests: "
        + ", ".join(f"{n} {name}" for name, n in Counter(results["mix"]).items())
        + ". Latency: good requests answered 2xx. Cores other: the rest of the machine (disturbance).",
        "",
        "| t s | requests | req/s | 2xx | 4xx exp. | unexp. | wrong | 5xx | transport | p50 ms | p99 ms "
        "| RSS MB | procs | fds | rejected (total) | cores server | cores client | cores other |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- "
        "| ---: | ---: | ---: |",
    ]
    for r in results["intervals"]:
        c, lat = r["responses"], r["latency_ms"]
        rejected = ", ".join(f"{k} {n}" for k, n in sorted(r["rejected"].items()) if n)
        t = f"{r['t_s']:.0f}{' (warm-up)' if r['warmup'] else ''}"
        lines.append(
            f"| {t} | {r['requests']} | {r['throughput']:.1f} | {c['2xx']} | {c['4xx_expected']} | "
            f"{c['unexpected_status']} | {c['wrong_answer']} | {c['5xx']} | {c['transport']} | {_ms(lat['p50'])} | "
            f"{_ms(lat['p99'])} | {r['rss_mb']:.1f} | {r['processes']} | {r['fds']} | {rejected} | "
            f"{r['server_cores']:.2f} | {r['client_cores']:.2f} | {r['other_cores']:.2f} |"
        )
    slope = v["rss_slope_second_half_mb_per_min"]
    lines += [
        "",
        f"**Verdict: {'PASS' if v['passed'] else 'FAIL'}**"
        + (f": {'; '.join(v['failures'])}" if v["failures"] else ""),
        "",
        f"- RSS after warm-up {v['rss_first_mb']} MB -> {v['rss_last_mb']} MB at the end: "
        f"{v['rss_growth_mb']:+} MB ({v['rss_growth_pct']:+}%); slope over the second half "
        f"{'n/a' if slope is None else f'{slope:+.2f} MB/min'}",
        f"- open fds {v['fds_first']} -> {v['fds_last']} ({v['fd_growth']:+})",
        "- responses: " + ", ".join(f"{k} {n}" for k, n in v["totals"].items()),
        *[f"- warning: {w}" for w in v["warnings"]],
    ]
    if results.get("plot"):
        lines += ["", f"![soak]({Path(results['plot']).name})"]
    return "\n".join(lines) + "\n"


def plot(results: dict[str, Any], path: Path) -> Path:
    """Throughput, p50/p99 latency, RSS and open fds against time; warm-up shaded."""
    records = results["intervals"]
    t = [r["t_s"] for r in records]
    fig, axes = plt.subplots(2, 2, figsize=(12, 7), sharex=True)
    series = [
        (axes[0, 0], "throughput (req/s)", {"req/s": [r["throughput"] for r in records]}),
        (
            axes[0, 1],
            "latency of good requests (ms)",
            {p: [r["latency_ms"][p] for r in records] for p in ("p50", "p99")},
        ),
        (axes[1, 0], "server RSS, process tree (MB)", {"RSS": [r["rss_mb"] for r in records]}),
        (axes[1, 1], "server open fds, process tree", {"fds": [r["fds"] for r in records]}),
    ]
    warmup_end = max((r["t_s"] for r in records if r["warmup"]), default=None)
    for ax, title, lines in series:
        for label, values in lines.items():
            ax.plot(t, [np.nan if v is None else v for v in values], marker=".", label=label)
        if warmup_end is not None:
            ax.axvspan(0, warmup_end, color="0.9", label="warm-up")
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    for ax in axes[1]:
        ax.set_xlabel("time (s)")
    m = results["machine"]
    fig.suptitle(f"soak: {results['workload']} ({m['host']}, {results['config']['device']}, commit {m['commit']})")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def write(results: dict[str, Any], out: Path) -> dict[str, Path]:
    """``<out>.json``, ``<out>.md`` and ``<out>.png``; returns their paths."""
    out.parent.mkdir(parents=True, exist_ok=True)
    paths = {"json": out.with_name(out.name + ".json"), "md": out.with_name(out.name + ".md")}
    paths["png"] = plot(results, out.with_name(out.name + ".png"))
    results["plot"] = str(paths["png"])
    paths["json"].write_text(json.dumps(results, indent=2) + "\n")
    paths["md"].write_text(markdown(results))
    return paths
