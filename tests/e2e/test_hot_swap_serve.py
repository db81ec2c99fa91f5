"""Models change without a restart, against real server processes: a checked hot-swap under concurrent load with
no failed request, a bad candidate refused while the old version serves, rollback, and ``--watch-weights``.

The versions are the shipped Fashion-MNIST ResNet-20 and files written from it (``tests/factories.py``): the
same answers under another content hash, or its weights with noise and its old golden set.
"""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from factories import replace_file, write_versions
from serve_helpers import ServerProcess, metric_total, wait_until

from app.service import file_version
from models import read_golden

SHIPPED = Path(__file__).resolve().parents[2] / "weights" / "resnet20-fashion-mnist.safetensors"
NAME = "fmnist"
KEY = "control-key"
AUTH = {"Authorization": f"Bearer {KEY}"}


@pytest.fixture(scope="module")
def versions(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return write_versions(SHIPPED, tmp_path_factory.mktemp("versions"))


@pytest.fixture(scope="module")
def images() -> list[bytes]:
    golden = read_golden(SHIPPED)
    assert golden is not None
    return golden.images[:16]


def serve_version(
    start_server: Callable[[list[str]], ServerProcess], tmp_path: Path, version: Path, *args: str
) -> tuple[ServerProcess, Path]:
    """A ready server started with ``args``, its weights directory holding ``version`` as ``NAME``; both returned."""
    weights = tmp_path / "weights"
    weights.mkdir()
    shutil.copy(version, weights / f"{NAME}.safetensors")
    server = start_server(["--weights-dir", str(weights), *args])
    server.wait_ready()
    return server, weights


@dataclass(frozen=True)
class Answer:
    started: float
    status: int
    version: str | None


class Load:
    """``clients`` threads sending /predict back to back until ``stop``; every answer recorded."""

    def __init__(self, url: str, images: list[bytes], clients: int = 6) -> None:
        self.url, self.images = url, images
        self.answers: list[Answer] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._client, args=(i,), daemon=True) for i in range(clients)]

    def __enter__(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=60)

    def _client(self, index: int) -> None:
        with httpx.Client(base_url=self.url, headers=AUTH, timeout=60) as client:
            n = index
            while not self._stop.is_set():
                image = self.images[n % len(self.images)]
                n += 1
                started = time.monotonic()
                try:
                    response = client.post(f"/predict?model={NAME}", files={"file": ("x.png", image, "image/png")})
                    version = response.json().get("version") if response.status_code == 200 else None
                    answer = Answer(started, response.status_code, version)
                except httpx.TransportError:
                    answer = Answer(started, 0, None)
                with self._lock:
                    self.answers.append(answer)

    def count(self, version: str, after: float) -> int:
        with self._lock:
            return sum(1 for a in self.answers if a.version == version and a.started > after)


def test_hot_swap_under_load_refusal_and_rollback_fail_no_request(
    start_server, tmp_path: Path, versions: dict[str, Path], images: list[bytes]
) -> None:
    args = ["--model-control", "--api-key", KEY, "--max-batch-size", "8"]
    server, weights = serve_version(start_server, tmp_path, versions["a"], *args)
    a, b, bad = (file_version(versions[k]) for k in ("a", "b", "bad"))

    def control(action: str) -> httpx.Response:
        return httpx.post(f"{server.url}/models/{NAME}/{action}", headers=AUTH, timeout=120)

    with Load(server.url, images) as load:
        wait_until(lambda: load.count(a, 0) >= 30, 60, "answers from version a")
        replace_file(versions["b"], weights / f"{NAME}.safetensors")
        swap_sent = time.monotonic()
        swapped = control("reload")
        swapped_at = time.monotonic()
        assert swapped.status_code == 200, swapped.text
        assert swapped.json()["version"] == b and swapped.json()["previous_version"] == a
        wait_until(lambda: load.count(b, swapped_at) >= 30, 60, "answers from version b")

        replace_file(versions["bad"], weights / f"{NAME}.safetensors")
        refused = control("reload")
        refused_at = time.monotonic()
        assert refused.status_code == 422 and "golden images" in refused.json()["detail"]
        wait_until(lambda: load.count(b, refused_at) >= 30, 60, "answers from version b after the refusal")
        [row] = [row for row in httpx.get(f"{server.url}/models", headers=AUTH).json()["checkpoints"]]
        assert row["state"] == "ready" and row["version"] == b
        assert row["refusal"]["version"] == bad and row["refusal"]["check"] == "golden"

        rollback_sent = time.monotonic()
        rolled = control("rollback")
        rolled_at = time.monotonic()
        assert rolled.status_code == 200 and rolled.json()["version"] == a, rolled.text
        wait_until(lambda: load.count(a, rolled_at) >= 30, 60, "answers from version a after the rollback")

    answers = load.answers
    failed = [answer for answer in answers if answer.status != 200]
    assert not failed, f"{len(failed)} of {len(answers)} requests failed: {failed[:5]}"
    assert {answer.version for answer in answers} == {a, b}  # the refused version never answered
    # New requests go to the new version once the switch is made; before the switch was asked for, the old one.
    assert all(x.version == a for x in answers if x.started < swap_sent)
    assert all(x.version == b for x in answers if swapped_at < x.started < rollback_sent)
    assert all(x.version == a for x in answers if x.started > rolled_at)

    listing = httpx.get(f"{server.url}/models", headers=AUTH).json()
    [row] = [row for row in listing["checkpoints"] if row["name"] == NAME]
    assert row["version"] == a and row["previous_version"] == b and row["refusal"] is None  # cleared by a switch
    metrics = server.get("/metrics").text
    assert metric_total(metrics, "resnet_serve_model_swaps_total", model=NAME, kind="swap") == 1
    assert metric_total(metrics, "resnet_serve_model_swaps_total", model=NAME, kind="rollback") == 1
    assert metric_total(metrics, "resnet_serve_model_refusals_total", model=NAME, check="golden") == 1
    records = server.records()
    assert any(r["msg"] == "candidate refused" and r.get("check") == "golden" for r in records)
    assert server.get("/ready").status_code == 200


def test_watch_weights_follows_files_appearing_changing_and_disappearing(
    start_server, tmp_path: Path, versions: dict[str, Path], images: list[bytes]
) -> None:
    args = ["--watch-weights", "--watch-debounce-s", "0.5", "--default-model", NAME, "--max-batch-size", "4"]
    server, weights = serve_version(start_server, tmp_path, versions["a"], *args)
    a, b = file_version(versions["a"]), file_version(versions["b"])

    def row(name: str) -> dict | None:
        rows = [r for r in server.get("/models").json()["checkpoints"] if r["name"] == name]
        return rows[0] if rows else None

    def predict(name: str) -> httpx.Response:
        return httpx.post(f"{server.url}/predict?model={name}", files={"file": ("x.png", images[0], "image/png")})

    replace_file(versions["b"], weights / "second.safetensors")
    wait_until(lambda: (r := row("second")) and r["state"] == "ready", 60, "second loaded")
    assert predict("second").json()["version"] == b

    replace_file(versions["a"], weights / "second.safetensors")
    wait_until(lambda: (r := row("second")) and r["version"] == a, 60, "second swapped to a")

    replace_file(versions["bad"], weights / "second.safetensors")
    wait_until(lambda: (r := row("second")) and r["refusal"] is not None, 60, "the bad version refused")
    assert predict("second").json()["version"] == a

    (weights / "second.safetensors").unlink()
    wait_until(lambda: row("second") is None, 60, "second unloaded")
    assert predict("second").status_code == 404
    assert predict(NAME).status_code == 200
    records = server.records()
    assert any(r["msg"] == "model unloaded" and r.get("model") == "second" for r in records)
