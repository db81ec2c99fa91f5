"""app.model_control through the HTTP API, in process: load, unload, checked reload, rollback, refusals, paths.

The models are the shipped Fashion-MNIST ResNet-20 (its golden set: 256 held-out test images) and versions of
it written by ``tests/factories.py``: the same answers in another file (a good candidate), or its weights with
noise and its old golden set (a bad one).
"""

from __future__ import annotations

import asyncio
import shutil
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from factories import replace_file, running_app, write_versions

from app.main import create_app
from app.model_control import ModelControl
from app.registry import ModelRegistry
from app.service import file_version
from app.settings import Settings
from app.weights_watch import WeightsWatcher
from models import read_golden

SHIPPED = Path("weights/resnet20-fashion-mnist.safetensors")
NAME = "fmnist"


@pytest.fixture(scope="module")
def versions(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return write_versions(SHIPPED, tmp_path_factory.mktemp("versions"))


@pytest.fixture
def weights(tmp_path: Path, versions: dict[str, Path]) -> Path:
    directory = tmp_path / "weights"
    directory.mkdir()
    shutil.copy(versions["a"], directory / f"{NAME}.safetensors")
    return directory


def golden_png() -> bytes:
    """One image of the shipped model's golden set (a Fashion-MNIST test image)."""
    golden = read_golden(SHIPPED)
    assert golden is not None
    return golden.images[0]


@dataclass(frozen=True)
class Served:
    """What a scenario acts on beside the HTTP client: the app's registry and model control."""

    registry: ModelRegistry
    control: ModelControl


def run(weights: Path, scenario: Callable[[httpx.AsyncClient, Served], Awaitable[Any]], **overrides: Any) -> Any:
    """Start the app on ``weights`` (model control on unless overridden), wait until ready, run ``scenario``."""
    options: dict[str, Any] = {
        "weights_dir": weights,
        "device": "cpu",
        "torch_threads": 1,
        "workers": 1,
        "max_batch_size": 4,
        "model_control": True,
        "default_model": NAME,
        **overrides,
    }
    app = create_app(Settings(**options))
    registry: ModelRegistry = app.state.registry

    async def main() -> Any:
        async with running_app(app) as client:
            deadline = time.monotonic() + 60
            while not registry.ready:
                assert time.monotonic() < deadline, "not ready within 60 s"
                await asyncio.sleep(0.01)
            return await scenario(client, Served(registry, app.state.control))

    return asyncio.run(main())


async def predict(client: httpx.AsyncClient, model: str = NAME) -> httpx.Response:
    return await client.post(f"/predict?model={model}", files={"file": ("x.png", golden_png(), "image/png")})


def sample(metrics: str, series: str) -> float:
    """The value of one series in a ``/metrics`` text (0 when absent)."""
    for line in metrics.splitlines():
        if line.startswith(series + " "):
            return float(line.split()[-1])
    return 0.0


def status(listing: dict[str, Any], name: str) -> dict[str, Any]:
    [row] = [row for row in listing["checkpoints"] if row["name"] == name]
    return row


def test_model_control_is_off_by_default(weights: Path) -> None:
    async def scenario(client: httpx.AsyncClient, app: Served) -> None:
        response = await client.post(f"/models/{NAME}/reload")
        assert response.status_code == 403 and "--model-control" in response.json()["detail"]

    run(weights, scenario, model_control=False)


def test_load_and_unload_a_new_file(weights: Path, versions: dict[str, Path]) -> None:
    async def scenario(client: httpx.AsyncClient, app: Served) -> None:
        shutil.copy(versions["b"], weights / "second.safetensors")
        listing = (await client.get("/models")).json()
        assert status(listing, "second")["state"] == "unloaded" and status(listing, NAME)["state"] == "ready"
        assert status(listing, NAME)["accuracy"] > 0.9 and status(listing, NAME)["batch_cap"] >= 1
        assert (await predict(client, "second")).status_code == 404  # a file, not a served model

        loaded = await client.post("/models/second/load")
        assert loaded.status_code == 200, loaded.text
        body = loaded.json()
        assert body["action"] == "load" and body["version"] == file_version(versions["b"])
        assert body["check"] == "golden images: 256 of 256 agree with the recorded answers"
        answer = await predict(client, "second")
        assert answer.status_code == 200 and answer.json()["version"] == body["version"]
        assert (await client.post("/models/second/load")).status_code == 409  # already served

        unloaded = await client.post("/models/second/unload")
        assert unloaded.status_code == 200 and unloaded.json()["previous_version"] == body["version"]
        gone = await predict(client, "second")
        assert gone.status_code == 404 and "unloaded" in gone.json()["detail"]
        assert status((await client.get("/models")).json(), "second")["state"] == "unloaded"
        assert (await client.post(f"/models/{NAME}/unload")).status_code == 409  # the default model
        assert (await client.post("/models/second/unload")).status_code == 404  # not served
        metrics = (await client.get("/metrics")).text
        assert 'resnet_serve_model_swaps_total{kind="load",model="second"} 1.0' in metrics
        assert 'resnet_serve_model_swaps_total{kind="unload",model="second"} 1.0' in metrics

    run(weights, scenario)


def test_reload_swaps_in_a_checked_version_and_rollback_returns(weights: Path, versions: dict[str, Path]) -> None:
    a, b = file_version(versions["a"]), file_version(versions["b"])

    async def scenario(client: httpx.AsyncClient, app: Served) -> None:
        unchanged = (await client.post(f"/models/{NAME}/reload")).json()
        assert unchanged["changed"] is False and unchanged["version"] == a
        assert (await client.post(f"/models/{NAME}/rollback")).status_code == 409  # nothing to roll back to

        images, preprocessed = (
            f'resnet_serve_images_total{{model="{NAME}"}}',
            f'resnet_serve_preprocess_seconds_count{{model="{NAME}"}}',
        )
        before = (await client.get("/metrics")).text
        replace_file(versions["b"], weights / f"{NAME}.safetensors")
        swapped = await client.post(f"/models/{NAME}/reload")
        assert swapped.status_code == 200, swapped.text
        assert swapped.json()["action"] == "swap" and swapped.json()["previous_version"] == a
        assert (await predict(client)).json()["version"] == b
        row = status((await client.get("/models")).json(), NAME)
        assert row["version"] == b and row["previous_version"] == a and row["check"].startswith("golden images")

        back = await client.post(f"/models/{NAME}/rollback")
        assert back.status_code == 200, back.text
        assert back.json()["version"] == a and back.json()["previous_version"] == b
        assert (await predict(client)).json()["version"] == a
        assert (await client.get("/ready")).status_code == 200
        metrics = (await client.get("/metrics")).text
        assert f'resnet_serve_model_swaps_total{{kind="swap",model="{NAME}"}} 1.0' in metrics
        assert f'resnet_serve_model_swaps_total{{kind="rollback",model="{NAME}"}} 1.0' in metrics
        info = [line for line in metrics.splitlines() if line.startswith("resnet_serve_model_info{")]
        assert len(info) == 1 and f'version="{a}"' in info[0]
        # The two checks classified every golden image; only the two requests count.
        assert sample(metrics, images) - sample(before, images) == 2
        assert sample(metrics, preprocessed) - sample(before, preprocessed) == 2

    run(weights, scenario)


def test_a_candidate_failing_its_golden_images_is_refused_and_the_old_version_serves(
    weights: Path, versions: dict[str, Path]
) -> None:
    a, bad = file_version(versions["a"]), file_version(versions["bad"])

    async def scenario(client: httpx.AsyncClient, app: Served) -> None:
        replace_file(versions["bad"], weights / f"{NAME}.safetensors")
        refused = await client.post(f"/models/{NAME}/reload")
        assert refused.status_code == 422, refused.text
        assert "golden images" in refused.json()["detail"] and "--min-agreement" in refused.json()["detail"]
        answer = await predict(client)
        assert answer.status_code == 200 and answer.json()["version"] == a
        row = status((await client.get("/models")).json(), NAME)
        assert row["state"] == "ready" and row["version"] == a
        assert row["refusal"]["version"] == bad and row["refusal"]["check"] == "golden"
        metrics = (await client.get("/metrics")).text
        assert f'resnet_serve_model_refusals_total{{check="golden",model="{NAME}"}} 1.0' in metrics
        assert f'version="{bad}"' not in metrics  # the candidate never published its gauges

        (weights / f"{NAME}.safetensors").write_bytes(b"not a checkpoint")
        broken = await client.post(f"/models/{NAME}/reload")
        assert broken.status_code == 422 and str(weights) not in broken.text
        assert (await predict(client)).json()["version"] == a

    run(weights, scenario)


@pytest.mark.parametrize(
    "path",
    [
        "/models/..%2Fsecret/load",
        "/models/%2E%2E/load",
        "/models/.hidden/load",
        "/models/http:%2F%2Fexample.com%2Fx/load",
        "/models/a%00b/reload",
    ],
)
def test_names_that_are_paths_or_urls_are_refused(weights: Path, path: str) -> None:
    outside = weights.parent / "secret.safetensors"
    shutil.copy(SHIPPED, outside)

    async def scenario(client: httpx.AsyncClient, app: Served) -> None:
        response = await client.post(path)
        assert response.status_code in (400, 404), response.text
        assert "secret" not in app.registry.services and len(app.registry.services) == 1

    run(weights, scenario)


def test_a_symlink_out_of_the_weights_directory_is_refused(weights: Path, tmp_path: Path) -> None:
    outside = tmp_path / "elsewhere" / "linked.safetensors"
    outside.parent.mkdir()
    shutil.copy(SHIPPED, outside)

    async def scenario(client: httpx.AsyncClient, app: Served) -> None:
        (weights / "linked.safetensors").symlink_to(outside)  # after startup (which serves what it finds)
        response = await client.post("/models/linked/load")
        assert response.status_code == 400 and "outside the weights directory" in response.json()["detail"]
        assert str(outside) not in response.text and "linked" not in app.registry.services
        assert (await client.post("/models/missing/load")).status_code == 404

    run(weights, scenario)


def test_the_profile_is_served_and_exported(weights: Path) -> None:
    async def scenario(client: httpx.AsyncClient, app: Served) -> None:
        profile = (await client.get(f"/models/{NAME}/profile")).json()
        assert profile["device"] == "cpu" and profile["max_batch_size"] == 4
        sizes = [row["batch_size"] for row in profile["batch_sizes"]]
        assert sizes == sorted(sizes) and sizes[0] == 1
        for row in profile["batch_sizes"]:
            assert row["latency_ms"] > 0
            assert row["images_per_s"] == pytest.approx(row["batch_size"] * 1000 / row["latency_ms"], rel=0.01)
            assert row["within_cap"] == (row["batch_size"] <= profile["batch_cap"])
        assert profile["peak_images_per_s"] == max(r["images_per_s"] for r in profile["batch_sizes"] if r["within_cap"])
        metrics = (await client.get("/metrics")).text
        for row in profile["batch_sizes"]:
            labels = f'{{batch_size="{row["batch_size"]}",model="{NAME}"}}'
            assert f"resnet_serve_model_profile_latency_seconds{labels}" in metrics
            assert f"resnet_serve_model_profile_images_per_second{labels}" in metrics
        assert (await client.get("/models/nope/profile")).status_code == 404

    run(weights, scenario, model_control=False)


def test_the_watcher_waits_for_a_file_to_settle_then_loads_swaps_and_unloads(
    weights: Path, versions: dict[str, Path]
) -> None:
    """``WeightsWatcher.poll`` with its clock given: a half-copied file is never loaded."""
    second = weights / "second.safetensors"
    data = versions["b"].read_bytes()

    async def scenario(client: httpx.AsyncClient, app: Served) -> None:
        watcher = WeightsWatcher(app.control, debounce_s=10)
        await watcher.poll(now=0)
        await watcher.poll(now=11)  # the served file settles: reloaded, unchanged
        assert app.registry.services[NAME].version == file_version(versions["a"])

        second.write_bytes(data[: len(data) // 2])  # a copy in progress
        await watcher.poll(now=20)
        await watcher.poll(now=29)
        assert "second" not in app.registry.services and "second" not in app.registry.failures
        with second.open("ab") as file:
            file.write(data[len(data) // 2 :])
        await watcher.poll(now=31)  # changed again: the clock starts again
        await watcher.poll(now=40)
        assert "second" not in app.registry.services
        await watcher.poll(now=41.5)
        assert app.registry.services["second"].version == file_version(versions["b"])

        replace_file(versions["b"], weights / f"{NAME}.safetensors")
        await watcher.poll(now=50)
        await watcher.poll(now=61)
        assert app.registry.services[NAME].version == file_version(versions["b"])

        second.unlink()
        (weights / f"{NAME}.safetensors").unlink()  # the default model keeps serving
        await watcher.poll(now=70)
        await watcher.poll(now=81)
        assert "second" not in app.registry.services and "second" in app.registry.unloaded
        assert app.registry.services[NAME].state == "ready" and (await predict(client)).status_code == 200
        assert not app.registry.failures

    run(weights, scenario, model_control=False)
