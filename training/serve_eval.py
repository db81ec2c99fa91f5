"""``resnet-eval --via-server URL``: the test split through a running service, beside the model in process.

Each test image goes to ``POST URL/predict?model=NAME&top_k=1`` as multipart field ``file``: an in-memory dataset's
prepared uint8 image as a lossless PNG, an image folder's original file bytes (so the service's own decoding and
resizing are what is measured). Requests run ``concurrency`` at a time; a 503 is retried after its ``Retry-After``.

Skew rule (the in-process top-1 against the served top-1 on the same images): with ``b`` images the model in
process gets right and the server wrong, and ``c`` the other way round, the gap is beyond noise when the top-1
differs on more than 1% of the images, or when ``|b - c| > 2 * sqrt(b + c)`` (McNemar's test, normal
approximation, about 95%). Training code talks to the service over HTTP only: it never imports ``app``.
"""

from __future__ import annotations

import io
import math
import mimetypes
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
from PIL import Image
from torch import Tensor
from torch.utils.data import Dataset
from tqdm import tqdm

from training.datasets import ImageFolderSplit

__all__ = [
    "ServeEvalError",
    "ServedImage",
    "describe_served_model",
    "evaluate_via_server",
    "format_report",
    "is_skew",
    "served_images",
]

#: More than this fraction of images with another top-1 is skew, whatever the paired test says.
SKEW_FRACTION = 0.01
#: Differing images listed in the report.
SHOWN_DIFFERENCES = 10
#: Retries of a 503 (overloaded or not ready), each after the response's ``Retry-After``.
RETRIES_503 = 5
MAX_RETRY_WAIT_S = 30.0
TIMEOUT_S = 60.0
_HINTS = {401: "check --api-key or RESNET_SERVE_API_KEY", 404: "see the server's /models, or pass --model"}


class ServeEvalError(Exception):
    """The server cannot be used for the comparison; the message is one line saying why."""


@dataclass(frozen=True)
class ServedImage:
    """One test image as the service receives it: a name to report (dataset index or file path), its label."""

    name: str
    label: int
    read: Callable[[], bytes]
    content_type: str = "image/png"


def _png(test: Dataset[tuple[Tensor, int]], index: int) -> bytes:
    image = test[index][0]  # uint8 (C, H, W)
    array = image.permute(1, 2, 0).numpy()
    buffer = io.BytesIO()
    Image.fromarray(array[:, :, 0] if array.shape[2] == 1 else array).save(buffer, format="PNG")
    return buffer.getvalue()


def served_images(test: Dataset[tuple[Tensor, int]]) -> list[ServedImage]:
    """The test split in order: an image folder's files as they are, other datasets' prepared images as PNG."""
    if isinstance(test, ImageFolderSplit):
        return [
            ServedImage(str(path), label, path.read_bytes, mimetypes.guess_type(path)[0] or "application/octet-stream")
            for path, label in test.samples
        ]
    return [ServedImage(str(i), int(test[i][1]), partial(_png, test, i)) for i in range(len(test))]


def _detail(response: httpx.Response) -> str:
    try:
        detail = response.json().get("detail")
    except ValueError:
        detail = None
    return str(detail) if detail is not None else response.text[:200] or response.reason_phrase


def _retry_after(response: httpx.Response) -> float:
    try:
        return min(max(float(response.headers.get("retry-after", "1")), 0.0), MAX_RETRY_WAIT_S)
    except ValueError:  # an HTTP date: not worth parsing
        return 1.0


def _send(client: httpx.Client, what: str, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
    """The JSON of a 200 response; 503 retried; anything else a ``ServeEvalError`` naming ``what``."""
    for attempt in range(RETRIES_503 + 1):
        try:
            response = client.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise ServeEvalError(f"cannot reach {client.base_url} ({what}): {exc or type(exc).__name__}") from None
        if response.status_code != 503 or attempt == RETRIES_503:
            break
        time.sleep(_retry_after(response))
    if response.status_code != 200:
        hint = f" ({_HINTS[response.status_code]})" if response.status_code in _HINTS else ""
        raise ServeEvalError(f"{what}: {client.base_url} answered {response.status_code}: {_detail(response)}{hint}")
    return response.json()


def _predict(client: httpx.Client, model: str, image: ServedImage) -> int:
    files = {"file": (Path(image.name).name or "image", image.read(), image.content_type)}
    body = _send(client, f"image {image.name}", "POST", "/predict", params={"model": model, "top_k": 1}, files=files)
    return int(body["predictions"][0]["index"])


def predict_all(
    client: httpx.Client, model: str, images: Sequence[ServedImage], *, concurrency: int, progress: bool
) -> list[int]:
    """The served top-1 of each image, in order; ``concurrency`` requests at a time; the first error stops it."""
    served = [-1] * len(images)
    with (
        ThreadPoolExecutor(max_workers=concurrency) as pool,
        tqdm(total=len(images), desc="via server", disable=not progress, leave=False, dynamic_ncols=True) as bar,
    ):
        futures = {pool.submit(_predict, client, model, image): i for i, image in enumerate(images)}
        try:
            for future in as_completed(futures):
                served[futures[future]] = future.result()
                bar.update()
        except BaseException:
            pool.shutdown(cancel_futures=True)
            raise
    return served


def is_skew(images: int, differing: int, b: int, c: int) -> bool:
    """The skew rule: top-1 differs on more than 1% of images, or McNemar's ``|b - c| > 2 sqrt(b + c)``."""
    return differing > SKEW_FRACTION * images or abs(b - c) > 2 * math.sqrt(b + c)


def compare(
    images: Sequence[ServedImage], in_process: Sequence[int], served: Sequence[int], labels: Sequence[str]
) -> dict[str, Any]:
    """Both accuracies on the same images, the paired disagreements, the verdict and the first differing images."""
    n = len(images)
    right_here = [p == image.label for p, image in zip(in_process, images, strict=True)]
    right_there = [s == image.label for s, image in zip(served, images, strict=True)]
    differ = [i for i in range(n) if in_process[i] != served[i]]
    b = sum(here and not there for here, there in zip(right_here, right_there, strict=True))
    c = sum(there and not here for here, there in zip(right_here, right_there, strict=True))
    return {
        "images": n,
        "in_process_accuracy": sum(right_here) / max(n, 1),
        "accuracy": sum(right_there) / max(n, 1),
        "differing": len(differ),
        "in_process_right_server_wrong": b,
        "in_process_wrong_server_right": c,
        "skew": is_skew(n, len(differ), b, c),
        "first_differences": [
            {
                "image": images[i].name,
                "label": labels[images[i].label],
                "in_process": labels[in_process[i]],
                "served": labels[served[i]],
            }
            for i in differ[:SHOWN_DIFFERENCES]
        ],
    }


def _client(url: str, api_key: str | None, concurrency: int = 1) -> httpx.Client:
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    return httpx.Client(base_url=url, headers=headers, timeout=TIMEOUT_S, limits=limits)


def describe_served_model(url: str, model: str, labels: Sequence[str], *, api_key: str | None = None) -> dict[str, Any]:
    """``GET URL/models/{model}``, checked to serve the checkpoint's ``labels``: called before any evaluation."""
    with _client(url, api_key) as client:
        info = _send(client, f"model {model!r}", "GET", f"/models/{quote(model, safe='')}")
    served_labels = info.get("metadata", {}).get("labels")
    if served_labels != list(labels):
        raise ServeEvalError(
            f"the server's model {model!r} has other labels than the checkpoint: {served_labels} vs {list(labels)}"
        )
    return info


def evaluate_via_server(
    url: str,
    test: Dataset[tuple[Tensor, int]],
    in_process: Sequence[int],
    labels: Sequence[str],
    *,
    served: dict[str, Any],
    api_key: str | None = None,
    concurrency: int = 8,
    progress: bool = False,
) -> dict[str, Any]:
    """Send ``test`` through the ``served`` model (``describe_served_model``) and compare with ``in_process``.

    ``in_process``: the model's top-1 per image, in the order of ``test``. Returns the ``via_server`` report.
    """
    images = served_images(test)
    if len(images) != len(in_process):
        raise ServeEvalError(f"{len(images)} test images but {len(in_process)} in-process predictions")
    model = served["name"]
    start = time.perf_counter()
    with _client(url, api_key, concurrency) as client:
        top1 = predict_all(client, model, images, concurrency=concurrency, progress=progress)
    return {
        "url": url,
        "model": model,
        "version": served.get("version"),
        "variant": served.get("variant"),
        **compare(images, in_process, top1, labels),
        "seconds": time.perf_counter() - start,
    }


def format_report(report: dict[str, Any]) -> list[str]:
    """The ``via_server`` report as text lines."""
    verdict = "TRAIN/SERVE SKEW" if report["skew"] else "no skew"
    lines = [
        f"via {report['url']} (model {report['model']}, version {report['version']}, variant {report['variant']}): "
        f"accuracy {100 * report['accuracy']:.2f}% beside {100 * report['in_process_accuracy']:.2f}% in process "
        f"on the same {report['images']} images",
        f"  top-1 differs on {report['differing']} images (in process right, server wrong: "
        f"{report['in_process_right_server_wrong']}; the other way: {report['in_process_wrong_server_right']}): "
        f"{verdict}",
    ]
    if report["first_differences"]:
        lines.append(f"  first differing images (of {report['differing']}):")
        lines += [
            f"    {d['image']}: true {d['label']}, in process {d['in_process']}, served {d['served']}"
            for d in report["first_differences"]
        ]
    return lines
