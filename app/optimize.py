"""``--optimize``: serve the fastest variant of a model whose answers agree with fp32 eager.

For ``auto`` every variant the host supports (``app.variants``) is built from the loaded fp32 model;
for a variant's name, that one. Each is run on the checkpoint's golden images (``models.golden``) and
compared with the fp32 answers recorded in the checkpoint: only a variant whose top-1 class agrees on at
least ``min_agreement`` of them is eligible. The eligible ones are timed, interleaved, at the batch sizes
the batcher forms (1 and the largest warm-up size up to 8), and the one with the least time per image,
averaged over those sizes, is served. A checkpoint without golden images is served eager: nothing
could show that a faster variant gives the same answers.

The outcome, each variant's agreement, speed and build time, is cached next to the checkpoint
(``<weights>/.optimized/<model>-<key>/``, or ``--optimize-cache-dir``) with the chosen variant's
artifact, keyed by the checkpoint's content hash, the library versions, the device and the settings
that decide it. ``resnet-optimize`` writes it ahead of time (the Docker image's build stage does);
a later start loads the chosen artifact, checks it on the golden images again, and serves it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from app.engine import Engine
from app.golden import Agreement, agreement, golden_inputs, predict_all
from app.variants import EAGER, BuildInputs, Runnable, Variant, variants_for
from models.golden import GoldenSet, read_golden
from models.preprocessing import normalize

__all__ = ["CACHE_DIR_NAME", "OptimizationReport", "VariantResult", "optimize_engine"]

log = logging.getLogger("app.optimize")

#: Where the cache lives by default: this directory beside the checkpoints.
CACHE_DIR_NAME = ".optimized"
#: Timed rounds per variant and batch size (the fastest counts).
ROUNDS = 3
#: Bumped when the cache's layout or what decides the choice changes.
CACHE_FORMAT = 1


@dataclass
class VariantResult:
    """One variant's trial: whether it could run, how well it agreed, how fast it was."""

    name: str
    precision: str
    status: str  # chosen, eligible, refused (disagreed), failed (build error), unavailable, not tried
    reason: str | None = None
    build_s: float | None = None
    agreement: dict[str, float | int] | None = None
    images_per_s: dict[int, float] = field(default_factory=dict)
    speedup: float | None = None  # mean time per image of eager fp32 over this variant's

    @property
    def per_image_s(self) -> float:
        """Mean over the timed batch sizes of the time per image (inf when not timed)."""
        if not self.images_per_s:
            return float("inf")
        return sum(1 / rate for rate in self.images_per_s.values()) / len(self.images_per_s)


@dataclass
class OptimizationReport:
    """What ``--optimize`` did for one model: shown in ``/models/{name}`` under ``optimization``."""

    mode: str
    chosen: str
    precision: str
    reason: str
    min_agreement: float
    golden_images: int = 0
    batch_sizes: list[int] = field(default_factory=list)
    variants: list[VariantResult] = field(default_factory=list)
    cached: bool = False
    cache_key: str | None = None
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> OptimizationReport:
        """The inverse of ``to_dict`` (a cached report)."""
        variants = [
            VariantResult(**{**v, "images_per_s": {int(k): r for k, r in v["images_per_s"].items()}})
            for v in raw["variants"]
        ]
        return cls(**{**raw, "variants": variants})


def _versions() -> dict[str, str]:
    versions = {"torch": torch.__version__}
    for package in ("openvino", "nncf", "resnet-serve"):
        try:
            versions[package] = importlib_metadata.version(package)
        except importlib_metadata.PackageNotFoundError:
            continue
    return versions


def cache_key(version: str, mode: str, device: torch.device, min_agreement: float, batch_sizes: list[int]) -> str:
    """What decides the choice, hashed: the checkpoint, the libraries, the device, the settings.

    Not the thread count: the artifacts do not depend on it (the runtime is compiled with the server's), so a
    choice made at an image's build time serves on hosts of any size; the ranking was measured on the builder.
    """
    device_name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    decided_by = {
        "format": CACHE_FORMAT,
        "checkpoint": version,
        "mode": mode,
        "device": device_name,
        "min_agreement": min_agreement,
        "batch_sizes": batch_sizes,
        "versions": _versions(),
    }
    return hashlib.sha256(json.dumps(decided_by, sort_keys=True).encode()).hexdigest()[:16]


def timed_batch_sizes(max_batch_size: int) -> list[int]:
    """The batch sizes variants are timed at: 1 and the batcher's largest up to 8."""
    return sorted({1, min(8, max_batch_size)})


class _Trial:
    """Builds, checks and times the variants of one engine's model."""

    def __init__(self, engine: Engine, golden: GoldenSet, min_agreement: float, threads: int) -> None:
        self.engine = engine
        self.golden = golden
        self.min_agreement = min_agreement
        spec = engine.metadata.preprocessing
        self.inputs = golden_inputs(golden.images, spec)
        self.build_inputs = BuildInputs(
            engine.device,
            engine.input_shape,
            [normalize(image.unsqueeze(0), spec, torch.float32) for image in self.inputs],
            threads,
        )

    def probabilities(self, runnable: Runnable) -> Callable[[Tensor], Tensor]:
        """uint8 batch -> probabilities through ``runnable``, as ``Engine.predict`` computes them."""
        engine = self.engine
        memory_format = torch.channels_last if runnable.channels_last else torch.preserve_format
        spec = engine.metadata.preprocessing

        @torch.inference_mode()
        def forward(batch: Tensor) -> Tensor:
            x = normalize(batch.to(engine.device), spec, runnable.dtype, memory_format)
            return torch.softmax(runnable.forward(x).float(), dim=1)

        return forward

    def check(self, runnable: Runnable) -> Agreement:
        """``runnable``'s agreement with the recorded fp32 answers on every golden image."""
        return agreement(self.golden.probs, predict_all(self.probabilities(runnable), self.inputs))

    def time(self, runnables: dict[str, Runnable], sizes: list[int]) -> dict[str, dict[int, float]]:
        """Images per second of each runnable at each size: rounds interleaved across variants, best run."""
        batches = {size: self.engine.blank_batch(size) for size in sizes}
        forwards = {name: self.probabilities(runnable) for name, runnable in runnables.items()}
        best: dict[str, dict[int, float]] = {name: dict.fromkeys(sizes, float("inf")) for name in runnables}
        for forward in forwards.values():  # once untimed: first runs allocate and tune
            for batch in batches.values():
                forward(batch).cpu()
        for _ in range(ROUNDS):
            for name, forward in forwards.items():
                for size, batch in batches.items():
                    start = time.perf_counter()
                    forward(batch).cpu()
                    best[name][size] = min(best[name][size], time.perf_counter() - start)
        return {name: {size: round(size / t, 2) for size, t in times.items()} for name, times in best.items()}


def _apply(engine: Engine, name: str, runnable: Runnable, report: OptimizationReport) -> OptimizationReport:
    engine.model = runnable.forward
    engine.dtype = runnable.dtype
    engine.channels_last = runnable.channels_last
    engine.variant = name
    engine.variant_precision = runnable.precision
    engine.optimization = report.to_dict()
    return report


def optimize_engine(
    engine: Engine,
    *,
    mode: str,
    version: str,
    min_agreement: float,
    max_batch_size: int,
    threads: int,
    cache_dir: Path | None,
) -> OptimizationReport:
    """Choose and install the engine's variant for ``mode`` (``auto`` or a variant's name); see the module doc.

    ``engine`` holds the fp32 eager model; ``threads``: the forward's intra-op threads. ``cache_dir``: where
    to read and write the cache (``None``: neither).
    """
    started = time.perf_counter()
    report = OptimizationReport(mode, EAGER, "fp32", "", min_agreement)
    if engine.dtype is not torch.float32 or engine.path is None:
        raise ValueError("optimize_engine needs the fp32 eager model, loaded from a checkpoint")
    golden = read_golden(engine.path)
    if golden is None:
        report.reason = "the checkpoint has no golden images to check a variant against (add them: resnet-golden)"
        log.warning("not optimised", extra={"model": engine.name, "reason": report.reason})
        return _apply(engine, EAGER, Runnable(engine.model, torch.float32, engine.channels_last, "fp32"), report)
    sizes = timed_batch_sizes(max_batch_size)
    report.golden_images, report.batch_sizes = len(golden), sizes
    report.cache_key = cache_key(version, mode, engine.device, min_agreement, sizes)
    trial = _Trial(engine, golden, min_agreement, threads)
    directory = cache_dir / f"{engine.name}-{report.cache_key}" if cache_dir is not None else None
    if directory is not None:
        cached = _from_cache(trial, directory)
        if cached is not None:
            cached_report, runnable = cached
            cached_report.seconds = round(time.perf_counter() - started, 3)
            log.info("optimised (cached)", extra={"model": engine.name, **_summary(cached_report)})
            return _apply(engine, cached_report.chosen, runnable, cached_report)
    chosen, runnable = _choose(trial, variants_for(mode), report)
    report.seconds = round(time.perf_counter() - started, 3)
    if directory is not None:
        _to_cache(directory, report, chosen, runnable)
    log.info("optimised", extra={"model": engine.name, **_summary(report)})
    return _apply(engine, chosen.name, runnable, report)


def _choose(trial: _Trial, variants: list[Variant], report: OptimizationReport) -> tuple[Variant, Runnable]:
    """Build and check each variant, time the eligible ones, fill ``report``; the fastest eligible wins."""
    engine = trial.engine
    eligible: dict[str, tuple[Variant, Runnable]] = {}
    for variant in variants:
        result = VariantResult(variant.name, variant.precision, "unavailable")
        report.variants.append(result)
        result.reason = variant.unavailable(engine.device)
        if result.reason is not None:
            continue
        started = time.perf_counter()
        try:
            runnable = variant.build(engine.model, trial.build_inputs)  # type: ignore[arg-type]
            measured = trial.check(runnable)
        except Exception as exc:  # noqa: BLE001  (a variant that cannot be built is reported, not fatal)
            result.status, result.reason = "failed", f"{type(exc).__name__}: {exc}"
            log.warning(
                "variant failed", extra={"model": engine.name, "variant": variant.name, "reason": result.reason}
            )
            continue
        result.build_s = round(time.perf_counter() - started, 3)
        result.agreement = measured.to_dict()
        if measured.top1 < trial.min_agreement:
            result.status = "refused"
            result.reason = f"top-1 agrees on {measured.top1:.2%} of the golden images, below {trial.min_agreement:.2%}"
            continue
        result.status = "eligible"
        eligible[variant.name] = (variant, runnable)
    speeds = trial.time({name: runnable for name, (_, runnable) in eligible.items()}, report.batch_sizes)
    results = {result.name: result for result in report.variants}
    for name, rates in speeds.items():
        results[name].images_per_s = rates
    baseline = results[EAGER].per_image_s
    for result in report.variants:
        if result.images_per_s:
            result.speedup = round(baseline / result.per_image_s, 3)
    if EAGER not in eligible:  # the model disagrees with its own recorded answers: nothing can be checked
        report.reason = (
            "eager fp32 itself disagrees with the checkpoint's recorded golden answers (stale golden set, or "
            "preprocessing changed since they were recorded); eager serves, unoptimised"
        )
        log.error("golden answers do not match the model", extra={"model": engine.name})
        return next(v for v in variants if v.name == EAGER), Runnable(engine.model, torch.float32, True, "fp32")
    best = min(eligible, key=lambda name: results[name].per_image_s)
    if report.mode != "auto":
        best = report.mode if report.mode in eligible else EAGER
    results[best].status = "chosen"
    report.chosen, report.precision = best, results[best].precision
    if report.mode == "auto":
        report.reason = "the fastest variant that agrees with fp32 eager"
    elif best == report.mode:
        report.reason = f"{report.mode}, as asked, agrees with fp32 eager"
    else:
        report.reason = f"{report.mode} was asked for but is not eligible (see its status); eager serves"
    return eligible[best]


def _summary(report: OptimizationReport) -> dict[str, Any]:
    return {
        "variant": report.chosen,
        "precision": report.precision,
        "seconds": report.seconds,
        "cached": report.cached,
        "variants": {
            v.name: {"status": v.status, "speedup": v.speedup, "agreement": v.agreement} for v in report.variants
        },
    }


def _from_cache(trial: _Trial, directory: Path) -> tuple[OptimizationReport, Runnable] | None:
    """The cached choice, loaded and checked again on the golden images; ``None`` when absent or unusable."""
    path = directory / "report.json"
    if not path.is_file():
        return None
    engine = trial.engine
    try:
        report = OptimizationReport.from_dict(json.loads(path.read_text()))
        variant = next(v for v in variants_for(report.chosen) if v.name == report.chosen)
        runnable = variant.load(engine.model, trial.build_inputs, directory / "model")  # type: ignore[arg-type]
        measured = trial.check(runnable)
    except Exception as exc:  # noqa: BLE001  (a damaged or foreign cache is rebuilt, not fatal)
        log.warning(
            "optimisation cache unusable", extra={"model": engine.name, "path": str(directory), "reason": repr(exc)}
        )
        return None
    if measured.top1 < trial.min_agreement:
        log.warning("cached variant disagrees; rebuilding", extra={"model": engine.name, "variant": report.chosen})
        return None
    report.cached = True
    return report, runnable


def _to_cache(directory: Path, report: OptimizationReport, variant: Variant, runnable: Runnable) -> None:
    """Write the report and the chosen variant's artifact; a cache that cannot be written is only logged."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
        variant.save(runnable, directory / "model")
        tmp = directory / "report.json.tmp"
        tmp.write_text(json.dumps(report.to_dict(), indent=1))
        tmp.replace(directory / "report.json")  # last: a report always has its artifact beside it
    except OSError as exc:
        log.warning("optimisation cache not written", extra={"path": str(directory), "reason": str(exc)})
