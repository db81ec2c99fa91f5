"""``training.serve_eval`` without a server: what is sent, the skew rule, retries, errors (httpx mock transport)."""

from __future__ import annotations

import io
from pathlib import Path

import httpx
import pytest
import torch
from PIL import Image
from torch.utils.data import TensorDataset

from training.datasets import ImageFolderSplit
from training.serve_eval import (
    ServeEvalError,
    _client,
    _send,
    compare,
    format_report,
    is_skew,
    predict_all,
    served_images,
)


@pytest.mark.parametrize(
    ("images", "differing", "b", "c", "skew"),
    [
        (1000, 0, 0, 0, False),
        (1000, 10, 5, 5, False),  # 1%, both ways: noise
        (1000, 11, 6, 5, True),  # more than 1%
        (1000, 7, 7, 0, True),  # one way: 7 > 2 sqrt(7)
        (1000, 4, 4, 0, False),  # 4 = 2 sqrt(4): not beyond
    ],
)
def test_the_skew_rule(images: int, differing: int, b: int, c: int, skew: bool) -> None:
    assert is_skew(images, differing, b, c) is skew


def test_in_memory_images_are_sent_as_lossless_png() -> None:
    pixels = torch.randint(0, 256, (3, 1, 28, 28), dtype=torch.uint8)
    images = served_images(TensorDataset(pixels, torch.tensor([4, 5, 6])))
    assert [(i.name, i.label, i.content_type) for i in images] == [
        ("0", 4, "image/png"),
        ("1", 5, "image/png"),
        ("2", 6, "image/png"),
    ]
    decoded = torch.frombuffer(bytearray(Image.open(io.BytesIO(images[1].read())).tobytes()), dtype=torch.uint8)
    assert torch.equal(decoded.view(1, 28, 28), pixels[1])


def test_image_folder_files_are_sent_as_they_are(tmp_path: Path) -> None:
    path = tmp_path / "cat.jpg"
    Image.new("RGB", (40, 30), (200, 10, 10)).save(path)
    [image] = served_images(ImageFolderSplit([(path, 1)], transform=lambda _: torch.zeros(0)))
    assert (image.name, image.label, image.content_type) == (str(path), 1, "image/jpeg")
    assert image.read() == path.read_bytes()


def test_compare_counts_paired_disagreements() -> None:
    images = served_images(TensorDataset(torch.zeros(4, 1, 2, 2, dtype=torch.uint8), torch.tensor([0, 1, 1, 0])))
    report = compare(images, [0, 1, 0, 1], [0, 0, 1, 0], ["a", "b"])
    assert (report["in_process_accuracy"], report["accuracy"]) == (0.5, 0.75)
    assert report["differing"] == 3
    assert (report["in_process_right_server_wrong"], report["in_process_wrong_server_right"]) == (1, 2)
    assert report["first_differences"][0] == {"image": "1", "label": "b", "in_process": "b", "served": "a"}
    text = format_report({**report, "url": "http://server", "model": "m", "version": "v1", "variant": "eager"})
    assert "TRAIN/SERVE SKEW" in text[1] and text[-1] == "    3: true a, in process b, served a"


def test_the_api_key_is_sent_as_a_bearer_token() -> None:
    with _client("http://server", "k3y") as client:
        assert client.headers["authorization"] == "Bearer k3y"
    with _client("http://server", None) as client:
        assert "authorization" not in client.headers


def _mock(handler) -> httpx.Client:
    return httpx.Client(transport=httpx.MockTransport(handler), base_url="http://server")


def test_a_503_is_retried_after_its_retry_after() -> None:
    answers = iter([httpx.Response(503, headers={"Retry-After": "0"}), httpx.Response(200, json={"ok": True})])
    assert _send(_mock(lambda request: next(answers)), "x", "GET", "/models/m") == {"ok": True}


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (401, "image 7: http://server answered 401: wrong key (check --api-key or RESNET_SERVE_API_KEY)"),
        (404, "image 7: http://server answered 404: wrong key (see the server's /models, or pass --model)"),
        (400, "image 7: http://server answered 400: wrong key"),
    ],
)
def test_other_answers_are_one_line_errors_naming_the_image(status: int, expected: str) -> None:
    client = _mock(lambda request: httpx.Response(status, json={"detail": "wrong key"}))
    with pytest.raises(ServeEvalError) as info:
        _send(client, "image 7", "POST", "/predict")
    assert str(info.value) == expected


def test_predictions_come_back_in_image_order_with_the_model_and_top_k() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        assert request.url.params["model"] == "m" and request.url.params["top_k"] == "1"
        index = int(request.content.split(b'filename="')[1].split(b'"')[0])  # the image's name
        return httpx.Response(200, json={"model": "m", "predictions": [{"label": "x", "index": index, "score": 1.0}]})

    images = served_images(TensorDataset(torch.zeros(20, 1, 2, 2, dtype=torch.uint8), torch.zeros(20)))
    assert predict_all(_mock(handler), "m", images, concurrency=4, progress=False) == list(range(20))
