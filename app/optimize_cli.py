"""``resnet-optimize``: choose each checkpoint's variant ahead of time and cache it, as the server would.

    resnet-optimize weights/*.safetensors            # auto, this host's defaults; prints the variant table
    RESNET_SERVE_TORCH_THREADS=1 resnet-optimize ... # the settings that decide the choice come from the
                                                     # same flags and environment as resnet-serve's

The cache it writes is the one ``resnet-serve --optimize`` reads (same key: the checkpoint's hash, the
library versions, the device, threads, batch sizes and ``--min-agreement``), so a server started with the
same settings serves the chosen variant without trying the others. The Docker image runs it at build time.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import torch
from pydantic import ValidationError

from app.devices import load_engine, resolve_serving_device
from app.optimize import CACHE_DIR_NAME, OptimizationReport, optimize_engine
from app.service import file_version
from app.settings import Settings
from models import CheckpointError

__all__ = ["cli", "format_report"]


def format_report(name: str, report: OptimizationReport) -> str:
    """The variant table of one model, as the docs show it."""
    sizes = report.batch_sizes
    head = ["variant", "status", "top-1 agree", "top-5 overlap", "max |dp|", *(f"img/s b={b}" for b in sizes)]
    rows = [[*head, "speed-up", "build s"]]
    for v in report.variants:
        a = v.agreement or {}
        rates = [f"{v.images_per_s[b]:.1f}" if b in v.images_per_s else "" for b in sizes]
        rows.append(
            [
                v.name,
                v.status,
                f"{a['top1']:.2%}" if a else "",
                f"{a['top5_overlap']:.2%}" if a else "",
                f"{a['max_prob_diff']:.4f}" if a else "",
                *rates,
                f"{v.speedup:.2f}x" if v.speedup else "",
                f"{v.build_s:.1f}" if v.build_s is not None else "",
            ]
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)) for row in rows]
    title = f"{name}: {report.chosen} ({report.precision}) - {report.reason}"
    cached = " [cached]" if report.cached else ""
    return "\n".join([title + cached, *lines, *(f"  {v.name}: {v.reason}" for v in report.variants if v.reason)])


def cli(argv: list[str] | None = None) -> int:
    """Console entry point: exit 2 with one line on a bad checkpoint or setting."""
    p = argparse.ArgumentParser(prog="resnet-optimize", description=__doc__.splitlines()[0])
    p.add_argument("checkpoints", type=Path, nargs="+", help="NAME.safetensors files")
    p.add_argument("--optimize", default=None, help="auto (default) or a variant's name")
    p.add_argument("--device", default=None, help="auto, cpu, cuda, cuda:N (default: as resnet-serve)")
    p.add_argument("--cache-dir", type=Path, default=None, help="default: each checkpoint's directory/.optimized")
    p.add_argument("--json", action="store_true", help="print each report as one JSON line")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="resnet-optimize: %(message)s")
    overrides = {key: value for key, value in (("optimize", args.optimize), ("device", args.device)) if value}
    try:
        settings = Settings.model_validate(overrides)
        if settings.optimize == "off":
            settings = settings.model_copy(update={"optimize": "auto"})
        device = resolve_serving_device(settings)
    except (ValidationError, ValueError) as exc:
        print(f"resnet-optimize: error: {exc}", file=sys.stderr)
        return 2
    if not isinstance(device, torch.device):
        print("resnet-optimize: error: the simulated device has no variants", file=sys.stderr)
        return 2
    torch.set_num_threads(settings.torch_threads)
    for path in args.checkpoints:
        try:
            engine = load_engine(path, device, precision="fp32", channels_last=settings.channels_last)
            cache_dir = args.cache_dir or settings.optimize_cache_dir or path.parent / CACHE_DIR_NAME
            report = optimize_engine(
                engine,
                mode=settings.optimize,
                version=file_version(path),
                min_agreement=settings.min_agreement,
                max_batch_size=settings.max_batch_size,
                threads=settings.torch_threads,
                cache_dir=cache_dir,
            )
        except (CheckpointError, OSError) as exc:
            print(f"resnet-optimize: error: {exc}", file=sys.stderr)
            return 2
        print(
            json.dumps({"model": engine.name, **report.to_dict()}) if args.json else format_report(engine.name, report)
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(cli())
