"""app.service and app.loader: load, warm, start, classify, drain, and the startup sequence."""

from __future__ import annotations

import asyncio
import hashlib
import io
import shutil
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors import safe_open
from safetensors.torch import save_file

from app import request_log
from app.admission import ByteBudget
from app.errors import DeadlineExceeded, DecodeBudgetExceeded, InvalidImage, NotReady, Overloaded
from app.executors import Executors
from app.loader import ModelLoader
from app.metrics import Metrics
from app.registry import ModelRegistry
from app.service import ModelService, ModelState
from app.settings import Settings

CPU = torch.device("cpu")


def png(size: tuple[int, int] = (30, 30)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, (10, 20, 30)).save(buffer, "PNG")
    return buffer.getvalue()


def settings(weights: Path, **overrides: object) -> Settings:
    values: dict = {"device": "cpu", "torch_threads": 1, "workers": 1, "max_batch_size": 4, **overrides}
    return Settings(weights_dir=weights, **values)


@pytest.fixture
def executors() -> Iterator[Executors]:
    pools = Executors.create(workers=1, torch_threads=1)
    yield pools
    pools.shutdown()


@pytest.fixture
def weights(tmp_path: Path, gray_checkpoint: Path, rgb_checkpoint: Path) -> Path:
    shutil.copy(gray_checkpoint, tmp_path / "gray.safetensors")
    shutil.copy(rgb_checkpoint, tmp_path / "rgb.safetensors")
    return tmp_path


def test_a_service_loads_serves_and_drains(weights: Path, executors: Executors) -> None:
    metrics = Metrics()
    path = weights / "rgb.safetensors"
    service = ModelService("rgb", path, settings=settings(weights), device=CPU, executors=executors, metrics=metrics)
    assert service.state == ModelState.LOADING
    service.load()
    assert service.version == hashlib.sha256(path.read_bytes()).hexdigest()[:16]
    assert service.engine is not None and 1 <= service.engine.batch_cap <= 4

    async def main() -> None:
        with pytest.raises(NotReady):
            await service.classify([png()], 3, time.monotonic() + 10)  # loaded, not started
        service.start(default=True)
        assert service.state == ModelState.READY
        record = request_log.begin()
        [small], [large] = await asyncio.gather(
            service.classify([png()], 3, time.monotonic() + 10),  # tiny: decoded inline
            service.classify([png((300, 200))], 2, time.monotonic() + 10),  # in the worker pool
        )
        assert len(small) == 3 and len(large) == 2
        assert [p["score"] for p in small] == sorted((p["score"] for p in small), reverse=True)
        fields = record.fields()
        assert fields["images"] == 2 and fields["preprocess_ms"] > 0 and "inference_ms" in fields
        with pytest.raises(InvalidImage):
            await service.classify([b"not an image"], 1, time.monotonic() + 10)
        text = metrics.render().decode()
        assert f'version="{service.version}"' in text and 'resnet_serve_queue_depth{model="rgb"}' in text
        await service.drain()
        assert service.state == ModelState.STOPPED
        with pytest.raises(NotReady):
            await service.classify([png()], 1, time.monotonic() + 10)
        text = metrics.render().decode()
        assert "resnet_serve_model_info{" not in text and 'resnet_serve_queue_depth{model="rgb"}' not in text

    asyncio.run(main())


def test_drain_answers_every_admitted_request_and_admits_no_new_one(weights: Path, executors: Executors) -> None:
    service = ModelService(
        "gray",
        weights / "gray.safetensors",
        settings=settings(weights),
        device=CPU,
        executors=executors,
        metrics=Metrics(),
    )
    service.load()

    async def main() -> None:
        service.start(default=True)
        release = asyncio.Event()
        entered = asyncio.Event()

        async def slow_client() -> list:
            with service.admitted():  # routed here before the drain: still reading its upload
                entered.set()
                await release.wait()
                [predictions] = await service.classify([png()], 1, time.monotonic() + 10)
                return predictions

        client = asyncio.ensure_future(slow_client())
        await entered.wait()
        draining = asyncio.ensure_future(service.drain())
        await asyncio.sleep(0)  # let the drain begin: it must now wait for the admitted request
        assert service.state == ModelState.DRAINING and not draining.done()
        with pytest.raises(NotReady, match="draining"), service.admitted():
            pass
        release.set()
        assert len(await client) == 1  # answered, not failed
        await draining
        assert service.state == ModelState.STOPPED

    asyncio.run(main())


def test_a_broken_file_fails_the_service_with_its_reason(tmp_path: Path, executors: Executors) -> None:
    path = tmp_path / "bad.safetensors"
    path.write_bytes(b"\x00" * 64)
    metrics = Metrics()
    service = ModelService("bad", path, settings=settings(tmp_path), device=CPU, executors=executors, metrics=metrics)
    with pytest.raises(Exception):  # noqa: B017  (whatever the checkpoint reader raises)
        service.load()
    assert service.state == ModelState.FAILED and service.failure
    assert 'model="bad"' not in metrics.render().decode()  # a model that never served leaves no series


def run_startup(registry: ModelRegistry, loader: ModelLoader) -> tuple[list[str], list[bool]]:
    fatal: list[str] = []
    ready: list[bool] = []

    async def main() -> None:
        await loader.load_all(registry, on_fatal=fatal.append, on_ready=lambda: ready.append(registry.ready))
        for service in registry.services.values():
            await service.stop()

    asyncio.run(main())
    return fatal, ready


def test_startup_loads_every_scanned_model_then_reports_ready(weights: Path, executors: Executors) -> None:
    registry = ModelRegistry(weights, default_model="rgb")
    registry.scan()
    fatal, ready = run_startup(registry, ModelLoader(settings(weights), CPU, executors, Metrics()))
    assert not fatal and ready == [True] and registry.state == "ready"
    assert sorted(registry.services) == ["gray", "rgb"]


def drop_a_tensor(path: Path) -> None:
    """Rewrite the checkpoint without one weight: its header still reads, loading it fails."""
    with safe_open(path, "pt") as file:
        header = file.metadata()
        tensors = {key: file.get_tensor(key) for key in file.keys() if key != "fc.weight"}  # noqa: SIM118 (safe_open is not iterable)
    save_file(tensors, path, metadata=header)


def test_startup_fails_when_the_default_model_cannot_load(weights: Path, executors: Executors) -> None:
    drop_a_tensor(weights / "gray.safetensors")
    registry = ModelRegistry(weights, default_model="gray")
    registry.scan()  # the header still reads
    fatal, ready = run_startup(registry, ModelLoader(settings(weights), CPU, executors, Metrics()))
    assert registry.state == "failed" and not ready
    assert fatal and "'gray' failed to load" in fatal[0]
    assert "gray" in registry.failures and list(registry.services) == ["rgb"]


@asynccontextmanager
async def serving(weights: Path, executors: Executors, **overrides: object) -> AsyncIterator[ModelService]:
    """The gray model, loaded and started with these settings; stopped when the block ends."""
    service = ModelService(
        "gray",
        weights / "gray.safetensors",
        settings=settings(weights, **overrides),
        device=CPU,
        executors=executors,
        metrics=Metrics(),
    )
    service.load()
    service.start(default=True)
    try:
        yield service
    finally:
        await service.stop()


def test_a_batch_reserves_a_queue_slot_for_every_image_or_is_refused_whole(weights: Path, executors: Executors) -> None:
    async def main() -> None:
        async with serving(weights, executors, max_queue=3) as service:
            lease = ByteBudget(10**9).lease(None)
            images = [png((300, 200)) for _ in range(4)]
            lease.grow(sum(map(len, images)))
            with pytest.raises(Overloaded):
                await service.classify(images, 1, time.monotonic() + 10, lease)
            assert images == []  # taken, though refused before any was decoded
            assert service.engine is not None
            assert len(await service.classify([png((300, 200)) for _ in range(3)], 1, time.monotonic() + 10)) == 3

    asyncio.run(main())


def test_pixel_tensors_skip_decoding_and_answer_as_their_encoded_image(weights: Path, executors: Executors) -> None:
    async def main() -> None:
        async with serving(weights, executors, max_queue=3) as service:
            assert service.engine is not None
            image = png((28, 28))
            tensor = service.engine.preprocess(image)
            [decoded] = await service.classify([image], 10, time.monotonic() + 10)
            record = request_log.begin()
            [direct, again] = await service.classify_pixels([tensor, tensor], 10, time.monotonic() + 10)
            for answer in (direct, again):  # batches of 2, not 1: the same up to float rounding
                assert [p["index"] for p in answer] == [p["index"] for p in decoded]
                assert [p["score"] for p in answer] == pytest.approx([p["score"] for p in decoded], abs=1e-6)
            assert record.images == 0 and record.batch_sizes  # no decode; batched
            with pytest.raises(Overloaded):  # queue slots reserved for every tensor, as for encoded images
                await service.classify_pixels([tensor] * 4, 1, time.monotonic() + 10)

    asyncio.run(main())


def test_bytes_go_back_to_the_budget_once_decoded_and_a_failed_image_cancels_its_batch_mates(
    weights: Path, executors: Executors
) -> None:
    async def main() -> None:
        async with serving(weights, executors) as service:
            budget = ByteBudget(10**9)
            good = png((300, 200))
            lease = budget.lease(2 * len(good) + 100)  # a multipart body: a little more than its files
            [first, second] = await service.classify([good, good], 1, time.monotonic() + 10, lease)
            assert first == second
            assert lease.size == budget.in_use == 100  # what is left is the envelope, returned by close()
            lease.close()
            assert budget.in_use == 0
            with pytest.raises(InvalidImage):
                await service.classify([b"not an image", *[good] * 8], 1, time.monotonic() + 10)

    asyncio.run(main())


def test_a_decode_whose_deadline_passed_while_waiting_for_a_worker_is_skipped(
    weights: Path, executors: Executors
) -> None:
    async def main() -> None:
        async with serving(weights, executors) as service:
            with pytest.raises(DeadlineExceeded, match="before the image was decoded"):
                await service.classify([png((300, 200))], 1, time.monotonic() - 1)

    asyncio.run(main())


def test_the_pixel_budget_covers_the_whole_request(weights: Path, executors: Executors) -> None:
    async def main() -> None:
        async with serving(weights, executors, max_request_pixels=300 * 200 * 2) as service:
            assert len(await service.classify([png((300, 200))] * 2, 1, time.monotonic() + 10)) == 2
            with pytest.raises(DecodeBudgetExceeded):
                await service.classify([png((300, 200))] * 3, 1, time.monotonic() + 10)

    asyncio.run(main())
