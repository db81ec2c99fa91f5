"""``check_candidate``: may a started (unpublished) service take its model's traffic?

Two checks, before a hot-swap, a rollback or a load through the model control API or ``--watch-weights``:

- metadata against the weights: as many labels as the model has outputs, and the preprocessing's channels
  what the first layer takes (one blank forward through the engine, whatever its variant);
- the checkpoint's golden images (``models.golden``: held-out images with the fp32 model's answers, written
  by ``resnet-train``, ``resnet-convert --golden-dir`` and ``resnet-golden``) classified through the
  service's whole serving path (decode limits, decode and resize, batcher, the engine's variant): the top-1
  answers must agree on at least ``--min-agreement`` of them (``--optimize``'s own bar; 1.0 demands all).

A checkpoint without golden images passes on its metadata alone, and the result says so.
Failures raise ``CandidateRefused`` in the service's own words (never an exception's text: that is logged).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

import torch

from app.errors import CandidateRefused, ServeError
from app.service import ModelService

__all__ = ["CheckResult", "check_candidate"]

log = logging.getLogger("app.candidate_check")

#: ``Executors.run_forward``: a callable run in the forward thread, awaited.
RunForward = Callable[[Callable[[], Any]], Awaitable[Any]]

#: How long the golden images may take through the serving path, all together.
CHECK_TIMEOUT_S = 300.0


@dataclass(frozen=True)
class CheckResult:
    """What a passed check found: golden images classified and agreeing (0 and 0: the checkpoint has none)."""

    golden_images: int
    agreeing: int
    seconds: float

    @property
    def summary(self) -> str:
        """One line for logs and ``/models``."""
        if not self.golden_images:
            return "metadata checked; no golden images in the checkpoint"
        return f"golden images: {self.agreeing} of {self.golden_images} agree with the recorded answers"


def _check_metadata(service: ModelService) -> None:
    """Labels against the model's outputs, channels against its input: one blank forward (in the calling thread)."""
    engine = service.engine
    assert engine is not None
    meta = engine.metadata
    if meta.preprocessing.channels != meta.architecture.in_channels:
        raise CandidateRefused(
            f"model {service.name!r}: preprocessing has {meta.preprocessing.channels} channels, the network takes "
            f"{meta.architecture.in_channels}",
            check="metadata",
        )
    try:
        probs = engine.predict(engine.blank_batch(1)).cpu()
    except Exception as exc:  # noqa: BLE001  (any failure of the forward refuses the candidate)
        log.error("candidate forward failed", extra={"model": service.name, "reason": f"{type(exc).__name__}: {exc}"})
        raise CandidateRefused(
            f"model {service.name!r}: a forward of one image fails (the server log has the reason)", check="metadata"
        ) from None
    if probs.shape[1] != len(meta.labels):
        raise CandidateRefused(
            f"model {service.name!r}: {len(meta.labels)} labels but the network has {probs.shape[1]} outputs",
            check="metadata",
        )
    if not torch.isfinite(probs).all():
        raise CandidateRefused(f"model {service.name!r}: non-finite outputs for a blank image", check="metadata")


async def _classify_golden(
    service: ModelService, image: bytes, deadline: float, slots: asyncio.Semaphore
) -> int | None:
    """The top-1 class of one golden image through the serving path; ``None`` when the service refuses it."""
    async with slots:
        try:
            [predictions] = await service.classify([image], 1, deadline)
        except ServeError as exc:
            log.warning("golden image refused", extra={"model": service.name, "reason": exc.detail})
            return None
    return int(predictions[0]["index"])


async def check_candidate(service: ModelService, *, min_agreement: float, run_forward: RunForward) -> CheckResult:
    """Check a started service (``ModelService.start(publish=False)``); raises ``CandidateRefused``.

    ``run_forward`` runs the metadata check's forward in the forward thread (``Executors.run_forward``).
    """
    started = time.perf_counter()
    await run_forward(partial(_check_metadata, service))
    golden = service.golden
    if golden is None:
        return CheckResult(0, 0, round(time.perf_counter() - started, 3))
    engine = service.engine
    assert engine is not None
    # No more in flight than a batch or two: the check must never fill the candidate's queue (503).
    slots = asyncio.Semaphore(max(1, min(2 * engine.batch_cap, service.max_queue)))
    deadline = time.monotonic() + CHECK_TIMEOUT_S
    with service.uncounted():  # the check's images are not traffic: left out of images_total and the histograms
        answers = await asyncio.gather(*(_classify_golden(service, image, deadline, slots) for image in golden.images))
    expected = golden.probs.argmax(dim=1).tolist()
    agreeing = sum(1 for got, want in zip(answers, expected, strict=True) if got == want)
    total = len(expected)
    if agreeing < min_agreement * total:
        first = [i for i, (got, want) in enumerate(zip(answers, expected, strict=True)) if got != want][:5]
        raise CandidateRefused(
            f"model {service.name!r}: only {agreeing} of {total} golden images ({100 * agreeing / total:.1f}%) get "
            f"their recorded top-1 answer through the serving path, below --min-agreement {min_agreement:g} "
            f"(first differing: {first})",
            check="golden",
        )
    return CheckResult(total, agreeing, round(time.perf_counter() - started, 3))
