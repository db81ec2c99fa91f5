"""``client`` and ``resnet-predict`` against a real ``resnet-serve`` process serving the shipped model.

One server, with an API key: the clients' answers are compared with plain httpx requests to ``/predict``; the
CLI runs in-process (``main(argv)``) except where its exit as a process matters.
"""

from __future__ import annotations

import asyncio
import io
import json
import subprocess
import sys
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image
from serve_helpers import REPO, SHIPPED_KEY, ServerProcess, free_port

from client import AsyncResNetClient, PredictResult, ResNetClient
from client.cli import main


def png(seed: int) -> bytes:
    """A 28x28 grayscale PNG of noise over a bright rectangle, different per seed."""
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 80, (28, 28), dtype=np.uint8)
    top, left = rng.integers(2, 10, 2)
    pixels[top : top + 16, left : left + 12] += 150
    buf = io.BytesIO()
    Image.fromarray(pixels, mode="L").save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """20 PNGs in a directory, some in a subdirectory, in sorted-path order."""
    directory = tmp_path_factory.mktemp("images")
    paths = [directory / (f"{i:02d}.png" if i % 3 else f"sub/{i:02d}.png") for i in range(20)]
    for i, path in enumerate(paths):
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(png(i))
    return sorted(paths)


def plain_predict(server: ServerProcess, path: Path, top_k: int = 5) -> dict:
    """``/predict`` through httpx alone."""
    response = httpx.post(
        f"{server.url}/predict",
        params={"top_k": top_k},
        files={"file": (path.name, path.read_bytes(), "image/png")},
        headers={"Authorization": f"Bearer {SHIPPED_KEY}"},
        timeout=30,
    )
    assert response.status_code == 200, response.text
    return response.json()


def same_answer(result: PredictResult, expected: dict) -> None:
    assert result.model == expected["model"] == "resnet20-fashion-mnist"
    assert [(p.label, p.index) for p in result.predictions] == [
        (p["label"], p["index"]) for p in expected["predictions"]
    ]
    assert [p.score for p in result.predictions] == pytest.approx([p["score"] for p in expected["predictions"]])


def test_sync_client_answers_as_plain_predict(shipped_server: ServerProcess, images: list[Path]) -> None:
    with ResNetClient(shipped_server.url, api_key=SHIPPED_KEY) as api:
        for path in images[:3]:
            expected = plain_predict(shipped_server, path, top_k=3)
            same_answer(api.predict(path, top_k=3), expected)
            same_answer(api.predict(path.read_bytes(), model="resnet20-fashion-mnist", top_k=3), expected)
        batch = api.predict_batch(images[:3], top_k=3)
        for path, result in zip(images[:3], batch, strict=True):
            assert result.top.index == plain_predict(shipped_server, path)["predictions"][0]["index"]
        models = api.models()
        assert models.default == "resnet20-fashion-mnist" and models.models[0].labels[0] == "T-shirt/top"
        assert api.model("resnet20-fashion-mnist").state == "ready"
        assert api.health() and api.ready().ready


def test_async_client_answers_as_plain_predict(shipped_server: ServerProcess, images: list[Path]) -> None:
    async def run() -> list[PredictResult]:
        async with AsyncResNetClient(shipped_server.url, api_key=SHIPPED_KEY) as api:
            return await asyncio.gather(*(api.predict(path) for path in images[:4]))

    for path, result in zip(images[:4], asyncio.run(run()), strict=True):
        same_answer(result, plain_predict(shipped_server, path))


def test_cli_json_gives_one_line_per_image_in_input_order(
    shipped_server: ServerProcess, images: list[Path], capsys
) -> None:
    directory = images[0].parent
    argv = [str(directory), "--url", shipped_server.url, "--api-key", SHIPPED_KEY, "--json", "--top-k", "3"]
    argv += ["--concurrency", "4"]
    assert main(argv) == 0
    out, err = capsys.readouterr()
    assert err == ""
    lines = [json.loads(line) for line in out.splitlines()]
    assert [line["file"] for line in lines] == [str(p) for p in images]
    for line in lines:
        assert set(line) in ({"file", "model", "predictions"}, {"file", "model", "version", "predictions"})
        assert len(line["predictions"]) == 3 and set(line["predictions"][0]) == {"label", "index", "score"}
    for line, path in list(zip(lines, images, strict=True))[::7]:
        assert line["predictions"][0]["index"] == plain_predict(shipped_server, path)["predictions"][0]["index"]


def test_cli_table_prints_a_row_per_file(shipped_server: ServerProcess, images: list[Path], capsys) -> None:
    chosen = [images[5], images[1], images[2]]
    assert main([*map(str, chosen), "--url", shipped_server.url, "--api-key", SHIPPED_KEY, "--top-k", "2"]) == 0
    rows = capsys.readouterr().out.splitlines()
    assert len(rows) == 3
    for row, path in zip(rows, chosen, strict=True):
        top = plain_predict(shipped_server, path)["predictions"][0]
        assert row.startswith(str(path)) and f"{top['label']} " in row


def test_a_corrupt_image_fails_alone_with_one_line(
    shipped_server: ServerProcess, images: list[Path], tmp_path: Path, capsys
) -> None:
    for path in images[:3]:
        (tmp_path / path.name).write_bytes(path.read_bytes())
    corrupt = tmp_path / "01b-corrupt.png"
    corrupt.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    assert main([str(tmp_path), "--url", shipped_server.url, "--api-key", SHIPPED_KEY, "--json"]) == 1
    out, err = capsys.readouterr()
    assert len(out.splitlines()) == 3 and str(corrupt) not in out
    assert err.count("\n") == 1 and err.startswith(f"resnet-predict: error: {corrupt}: 400 ")


def test_a_wrong_api_key_gives_the_401_detail(shipped_server: ServerProcess, images: list[Path], capsys) -> None:
    assert main([str(images[0]), str(images[1]), "--url", shipped_server.url, "--api-key", "wrong"]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err == "resnet-predict: error: 401 missing or invalid API key (Authorization: Bearer ...)\n"


def test_an_unreachable_server_exits_2_with_one_line(images: list[Path]) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    command = [sys.executable, "-m", "client.cli", str(images[0]), "--url", url, "--max-attempts", "2"]
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.count("\n") == 1 and result.stderr.startswith(
        f"resnet-predict: error: cannot connect to {url}"
    )
