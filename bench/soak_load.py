"""The soak's load: a closed loop of ``concurrency`` httpx clients cycling through a fixed request mix,
every answer checked and tallied per interval.

wrk (``bench.loadgen``) sends one body and reports once at the end; a soak needs a mix of bodies,
a check of every answer and counts per interval, so it gets this small asyncio client instead. Of
every ``CYCLE`` requests, three are bad on purpose (a truncated image, bytes that are no image, a
body one byte over ``--max-upload-mb``) so the error paths are soaked too; the rest are good images.
A good image's answer must match what the server answered for it on the unloaded server before the
load (``references``): same model, top-k sorted, each score within ``TOLERANCE`` of the reference
and no class left out that scores higher.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import httpx

__all__ = ["CYCLE", "OUTCOMES", "ClosedLoop", "Shot", "Tally", "bad_shots", "mix", "references"]

CYCLE = 50
TOLERANCE = 1e-3  # batch composition changes float rounding, never the answer by this much
TOP_K = 5
#: How a response is counted: answered right, refused as it should be, and the four kinds of failure.
OUTCOMES = ("2xx", "4xx_expected", "unexpected_status", "wrong_answer", "5xx", "transport")


@dataclass(frozen=True)
class Shot:
    """One request of the mix: its body, which model it asks for, and whether it should succeed."""

    name: str
    body: bytes
    content_type: str
    model: str
    good: bool


def bad_shots(image: bytes, content_type: str, model: str, max_upload_bytes: int) -> list[Shot]:
    """A truncated copy of ``image``, bytes that are no image, and a body one byte over the limit."""
    oversize = image[:16] + bytes(max_upload_bytes + 1 - min(16, len(image)))
    return [
        Shot("truncated", image[: len(image) // 2], content_type, model, good=False),
        Shot("not-an-image", bytes(range(256)) * 4, content_type, model, good=False),
        Shot("oversize", oversize, content_type, model, good=False),
    ]


def mix(good: list[Shot], bad: list[Shot], cycle: int = CYCLE) -> list[Shot]:
    """One cycle of ``cycle`` requests: the good shots in turn, the bad ones spread evenly among them."""
    shots = [good[i % len(good)] for i in range(cycle - len(bad))]
    step = cycle // len(bad)
    for j, shot in enumerate(bad):
        shots.insert(j * step + step // 2, shot)
    return shots


async def references(client: httpx.AsyncClient, url: str, shots: list[Shot]) -> dict[str, dict[int, float]]:
    """Every class's score for each good shot, asked one at a time of the idle server (top_k=1000: the
    server answers at most as many classes as the model has)."""
    out: dict[str, dict[int, float]] = {}
    for shot in shots:
        r = await client.post(
            url, content=shot.body, headers={"content-type": shot.content_type}, params=_params(shot, 1000)
        )
        r.raise_for_status()
        out[shot.name] = {p["index"]: p["score"] for p in r.json()["predictions"]}
    return out


def _params(shot: Shot, top_k: int) -> dict[str, str | int]:
    return {"model": shot.model, "top_k": top_k}


def answer_matches(answer: dict[str, Any], model: str, reference: dict[int, float], top_k: int = TOP_K) -> bool:
    """``answer`` is the top ``top_k`` of ``reference`` for ``model``, up to ``TOLERANCE``."""
    predictions = answer.get("predictions", [])
    if answer.get("model") != model or not predictions or len(predictions) != min(top_k, len(reference)):
        return False
    scores = [p["score"] for p in predictions]
    kth_best = sorted(reference.values(), reverse=True)[len(predictions) - 1]
    return (
        scores == sorted(scores, reverse=True)
        and all(abs(p["score"] - reference.get(p["index"], -1.0)) <= TOLERANCE for p in predictions)
        and scores[-1] >= kth_best - TOLERANCE  # no class that scores higher left out
    )


@dataclass
class Tally:
    """What completed during one interval."""

    outcomes: Counter[str] = field(default_factory=Counter)
    latencies_ms: list[float] = field(default_factory=list)  # good shots answered 2xx
    first_failure: dict[str, str] = field(default_factory=dict)  # outcome -> one example, for the log

    def add(self, outcome: str, latency_ms: float, shot: Shot, detail: str = "") -> None:
        """Count one response."""
        self.outcomes[outcome] += 1
        if shot.good and outcome == "2xx":
            self.latencies_ms.append(latency_ms)
        if outcome not in ("2xx", "4xx_expected"):
            self.first_failure.setdefault(outcome, f"{shot.name}: {detail}"[:300])


def _outcome(shot: Shot, response: httpx.Response, reference: dict[int, float]) -> str:
    status = response.status_code
    if 200 <= status < 300 and shot.good:
        try:
            answer = response.json()
        except ValueError:
            return "wrong_answer"
        return "2xx" if answer_matches(answer, shot.model, reference) else "wrong_answer"
    if 400 <= status < 500 and not shot.good:
        return "4xx_expected"
    return "5xx" if status >= 500 else "unexpected_status"


class ClosedLoop:
    """``concurrency`` clients, each sending its next request as soon as its last one is answered."""

    def __init__(
        self, url: str, shots: list[Shot], reference: dict[str, dict[int, float]], concurrency: int, timeout_s: float
    ) -> None:
        self.url, self.shots, self.reference = url, shots, reference
        self.concurrency, self.timeout_s = concurrency, timeout_s
        self.tally = Tally()
        self._next = 0

    def take(self) -> Tally:
        """The tally since the last call; counting goes on in a fresh one."""
        tally, self.tally = self.tally, Tally()
        return tally

    async def run(self, stop: asyncio.Event) -> None:
        """Drive the server until ``stop`` is set; requests in flight then are finished and counted."""
        limits = httpx.Limits(max_connections=self.concurrency, max_keepalive_connections=self.concurrency)
        async with httpx.AsyncClient(timeout=self.timeout_s, limits=limits) as client:
            await asyncio.gather(*(self._client(client, stop) for _ in range(self.concurrency)))

    async def _client(self, client: httpx.AsyncClient, stop: asyncio.Event) -> None:
        while not stop.is_set():
            shot = self.shots[self._next % len(self.shots)]
            self._next += 1
            started = time.perf_counter()
            try:
                r = await client.post(
                    self.url,
                    content=shot.body,
                    headers={"content-type": shot.content_type},
                    params=_params(shot, TOP_K),
                )
            except httpx.TransportError as exc:
                self.tally.add("transport", 0.0, shot, repr(exc))
                await asyncio.sleep(0.05)  # a dead server refuses at once: do not spin
                continue
            latency_ms = (time.perf_counter() - started) * 1000
            outcome = _outcome(shot, r, self.reference.get(shot.name, {}))
            self.tally.add(outcome, latency_ms, shot, f"{r.status_code} {r.text[:200]}")
