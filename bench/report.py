"""Results -> files: ``<date>-<host>.json``, a Markdown table (``.md``) and PNG plots per workload; for the other
benchmarks, ``write_json_and_markdown``.

Also evaluates the goals issue 6 sets (reported, never asserted): the figures are drift-corrected,
i.e. divided by the in-process probe of the same minutes.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

__all__ = ["DISTURBED_CORES", "floor_ratio", "goals", "markdown", "plot", "write_json_and_markdown", "write_results"]

#: A point during which other processes used more than this many cores is marked disturbed.
DISTURBED_CORES = 0.25


def _point(results: dict[str, Any], workload: str, system: str, level: int) -> dict[str, Any] | None:
    block = results["workloads"].get(workload, {}).get("systems", {}).get(system)
    if not block:
        return None
    return next((p for p in block["points"] if p["concurrency"] == level), None)


def floor_ratio(results: dict[str, Any], workload: str, system: str, level: int) -> float | None:
    """``system``'s server CPU per request over the bare ASGI floor's, same workload and concurrency."""
    p, floor = _point(results, workload, system, level), _point(results, workload, "floor", level)
    if p is None or floor is None or not floor["server_cpu_us_per_request"] > 0:
        return None
    return float(p["server_cpu_us_per_request"] / floor["server_cpu_us_per_request"])


def goals(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Each goal: what it asks, the measured value, whether it is met (``None`` when not measured)."""
    out: list[dict[str, Any]] = []
    gpu = str(results["config"].get("device", "cpu")).startswith("cuda")

    def add(goal: str, value: str, met: bool | None) -> None:
        out.append({"goal": goal, "value": value, "met": met})

    if gpu:
        p = _point(results, "large", "ours", 64)
        add(
            "large c=64 (GPU): >= 0.8x in-process ceiling",
            f"{p['ratio_to_probe']:.2f}x" if p else "n/a",
            p["ratio_to_probe"] >= 0.8 if p else None,
        )
        return out
    p = _point(results, "large", "ours", 32)
    add(
        "large c=32: throughput >= 0.9x ceiling (probe)",
        f"{p['ratio_to_probe']:.2f}x" if p else "n/a",
        p["ratio_to_probe"] >= 0.9 if p else None,
    )
    if p:
        lat = p["latency_ms"]
        ratio = lat["p99"] / max(lat["p50"], 1e-9)
        add("large c=32: p99 <= 2x p50", f"p99/p50 = {ratio:.2f}", ratio <= 2.0)
    ours, lit = _point(results, "small", "ours", 64), _point(results, "small", "litserve", 64)
    if ours and lit:
        ratio = ours["ratio_to_probe"] / max(lit["ratio_to_probe"], 1e-9)
        add("small c=64: >= 3x LitServe throughput (drift-corrected)", f"{ratio:.2f}x", ratio >= 3.0)
    else:
        add("small c=64: >= 3x LitServe throughput (drift-corrected)", "n/a", None)
    for workload in results["workloads"]:
        p = _point(results, workload, "ours", 1)
        if p:
            extra = p["p50_minus_probe_latency_ms"]
            add(f"{workload} c=1: p50 <= in-process latency + 3 ms", f"+{extra:.2f} ms", extra <= 3.0)
    path = results.get("request_path")
    add(
        "small c=64, one pinned core, simulated device: server CPU per request <= 5x the bare ASGI floor",
        "n/a"
        if path is None
        else f"{path['ratio']:.1f}x ({path['ours_cpu_us_per_request']:.0f} vs "
        f"{path['floor_cpu_us_per_request']:.0f} us)",
        None if path is None else path["ratio"] <= 5.0,
    )
    for workload, section in results.get("simulated_device", {}).items():
        at_64 = [p for p in section["points"] if p["concurrency"] == 64] or section["points"]
        best = max(at_64, key=lambda p: p["ratio_to_ceiling"])
        add(
            f"{workload} c={best['concurrency']} on the simulated GPU: >= 0.8x the device ceiling",
            f"{best['ratio_to_ceiling']:.2f}x with {best['processes']} process(es); "
            f"{best['cores_for_80_percent']:.1f} cores needed",
            best["ratio_to_ceiling"] >= 0.8,
        )
    return out


def _simulated_markdown(results: dict[str, Any]) -> list[str]:
    """The request-path ratio, the simulated-device table and the projection, as Markdown lines."""
    lines: list[str] = []
    path = results.get("request_path")
    if path:
        lines += [
            "",
            f"## Request path: {path['workload']} c={path['concurrency']}, one pinned core, simulated device",
            "",
            "| round | ours req/s | ours CPU µs/req | floor req/s | floor CPU µs/req | ratio | cores other |",
            "| ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        ]
        lines += [
            f"| {i} | {r['ours_throughput']:.0f} | {r['ours_cpu_us_per_request']:.0f} | {r['floor_throughput']:.0f} | "
            f"{r['floor_cpu_us_per_request']:.0f} | {r['ratio']:.2f} | {r['other_cores']:.2f} |"
            for i, r in enumerate(path["rounds"], 1)
        ]
        lines += ["", f"Median: our request path costs {path['ratio']:.2f}x the bare ASGI floor per request."]
    sections = results.get("simulated_device", {})
    if sections:
        lines += ["", "## Simulated GPU (`--device sim`, fp16 ResNet-50 timings; docs/performance.md)"]
    for workload, section in sections.items():
        c = section["ceiling"]
        lines += [
            "",
            f"### {workload}: {section['note']}",
            "",
            f"Device ceiling {c['best_images_per_s']:.0f} img/s at batch {c['best_batch_size']} (forward only).",
            "",
            "| processes | conc. | req/s | x device | p50 ms | p99 ms | errors | server cores | CPU µs/req | "
            "cores for 80% |",
            "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        ]
        lines += [
            f"| {p['processes']} | {p['concurrency']} | {p['throughput']:.0f} | {p['ratio_to_ceiling']:.2f} | "
            f"{p['p50_ms']:.1f} | {p['p99_ms']:.1f} | {p['errors']} | {p['server_cores']:.2f} | "
            f"{p['cpu_us_per_request']:.0f} | {p['cores_for_80_percent']:.1f} |"
            for p in section["points"]
        ]
    if sections:
        rates = [int(rate) for rate in next(iter(sections.values()))["projection"]["cores"]]
        lines += [
            "",
            "### Projection: cores a front end needs (measured CPU per request, lowest of the process choices)",
            "",
            "| workload | CPU µs/request | requests/s per core | "
            + " | ".join(f"cores for {r:,} img/s" for r in rates)
            + " |",
            "| --- | ---: | ---: | " + " | ".join("---:" for _ in rates) + " |",
        ]
        for workload, section in sections.items():
            proj = section["projection"]
            cores = " | ".join(f"{proj['cores'][rate]:.1f}" for rate in proj["cores"])
            lines.append(f"| {workload} | {proj['cpu_us_per_request']:.0f} | {proj['requests_per_core']:,} | {cores} |")
    return lines


def markdown(results: dict[str, Any], plots: list[str]) -> str:
    """The results as Markdown: machine, ceiling per workload, served points, goals."""
    m = results["machine"]
    lines = [
        f"# Benchmark {m['date']} on {m['host']}",
        "",
        f"- Machine: {m['cpu']}, {m['cores']} cores" + (f", GPU {m['gpu']}" if m.get("gpu") else ""),
        f"- Software: Python {m['python']}, torch {m['torch']}, commit {m['commit']}",
        f"- Command: `{m['command']}`",
        f"- Device {results['config']['device']}, precision {results['config']['precision']}, "
        f"torch threads {results['config']['threads']}, {results['config']['duration_s']} s per point"
        + (", pinned: server on one core, wrk on the others" if results["config"].get("pin") else ""),
    ]
    if m["training_running"] or m.get("training_running_at_end"):
        lines.append("- **Invalid for comparison: a training job ran on this machine during the run.**")
    for name, entry in results["workloads"].items():
        lines += ["", f"## {name}: {entry['note']}", ""]
        if "ceiling" in entry:
            c = entry["ceiling"]
            lines += [
                f"In-process ceiling (no HTTP): preprocess {c['preprocess_ms']:.2f} ms/image; "
                f"best {c['best_images_per_s']:.1f} img/s at batch {c['best_batch_size']}; "
                f"single-image latency floor {c['latency_floor_ms']:.2f} ms.",
                "",
                "| batch | forward img/s | preprocess + forward img/s |",
                "| ---: | ---: | ---: |",
            ]
            lines += [
                f"| {p['batch_size']} | {p['forward_images_per_s']:.1f} | {p['together_images_per_s']:.1f} |"
                for p in c["points"]
            ]
            lines.append("")
        if entry["systems"]:
            lines += [
                "| system | conc. | req/s | x probe | p50 ms | p90 ms | p99 ms | errors | "
                "cores server | server CPU µs/req | x floor | cores wrk | cores other |",
                "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
            ]
        for system, block in entry["systems"].items():
            for p in block["points"]:
                lat, u = p["latency_ms"], p["cpu"]
                mark = " (disturbed)" if u["other"] > DISTURBED_CORES else ""
                ratio = floor_ratio(results, name, system, p["concurrency"])
                lines.append(
                    f"| {system} | {p['concurrency']} | {p['throughput']:.1f} | {p['ratio_to_probe']:.2f} | "
                    f"{lat['p50']:.1f} | {lat['p90']:.1f} | {lat['p99']:.1f} | {p['errors']} | "
                    f"{u['server']:.2f} | {p['server_cpu_us_per_request']:.0f} | "
                    f"{'' if ratio is None else f'{ratio:.1f}'} | {u['loadgen']:.2f} | {u['other']:.2f}{mark} |"
                )
        if entry["systems"]:
            probes = ", ".join(
                f"{s} {b['probes'][0]['images_per_s']:.1f} -> {b['probes'][1]['images_per_s']:.1f} img/s"
                for s, b in entry["systems"].items()
            )
            lines += ["", f"Probes (in-process img/s before -> after each block): {probes}."]
    lines += _simulated_markdown(results)
    lines += ["", "## Goals (reported, not asserted)", "", "| goal | measured | met |", "| --- | --- | --- |"]
    for g in goals(results):
        met = "n/a" if g["met"] is None else ("yes" if g["met"] else "**no**")
        lines.append(f"| {g['goal']} | {g['value']} | {met} |")
    if plots:
        lines += ["", *[f"![{Path(p).stem}]({Path(p).name})" for p in plots]]
    return "\n".join(lines) + "\n"


def plot(results: dict[str, Any], workload: str, path: Path) -> Path | None:
    """Throughput, throughput / probe and p99 latency vs concurrency, one line per system."""
    entry = results["workloads"][workload]
    if not entry["systems"]:
        return None
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    for system, block in entry["systems"].items():
        if system == "floor":  # no model: its tens of thousands of requests/s would flatten every other line
            continue
        levels = [p["concurrency"] for p in block["points"]]
        axes[0].plot(levels, [p["throughput"] for p in block["points"]], marker="o", label=system)
        axes[1].plot(levels, [p["ratio_to_probe"] for p in block["points"]], marker="o", label=system)
        axes[2].plot(levels, [p["latency_ms"]["p99"] for p in block["points"]], marker="o", label=system)
    if "ceiling" in entry:
        axes[0].axhline(entry["ceiling"]["best_images_per_s"], color="k", ls="--", label="ceiling (start of run)")
        axes[2].axhline(entry["ceiling"]["latency_floor_ms"], color="k", ls="--", label="in-process latency")
    axes[1].axhline(1.0, color="k", ls="--", label="ceiling (probe)")
    titles = ["throughput (req/s)", "throughput / in-process probe", "p99 latency (ms)"]
    for ax, title in zip(axes, titles, strict=True):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("concurrency")
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    axes[2].set_yscale("log")
    fig.suptitle(f"{workload}: {entry['note']} ({results['machine']['host']}, {results['config']['device']})")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def write_results(results: dict[str, Any], output_dir: Path) -> dict[str, Path]:
    """Write JSON, Markdown and plots as ``<date>-<host>[-<device>]``; returns their paths."""
    output_dir.mkdir(parents=True, exist_ok=True)
    device = str(results["config"]["device"])
    suffix = "" if device == "cpu" else f"-{device.replace(':', '')}"
    stem = f"{time.strftime('%Y-%m-%d')}-{results['machine']['host']}{suffix}"
    results["goals"] = goals(results)
    paths = {"json": output_dir / f"{stem}.json", "md": output_dir / f"{stem}.md"}
    plots = []
    for workload in results["workloads"]:
        png = plot(results, workload, output_dir / f"{stem}-{workload}.png")
        if png:
            paths[f"png-{workload}"] = png
            plots.append(str(png))
    paths["json"].write_text(json.dumps(results, indent=2) + "\n")
    paths["md"].write_text(markdown(results, plots))
    return paths


def write_json_and_markdown(results: dict[str, Any], stem: Path, text: str) -> None:
    """``results`` as ``<stem>.json`` and the Markdown ``text`` as ``<stem>.md``, then ``text`` printed."""
    stem.with_suffix(".json").write_text(json.dumps(results, indent=1))
    stem.with_suffix(".md").write_text(text)
    print(text)
