"""A real ``resnet-serve`` process with two trained checkpoints: predictions, batching, errors, metrics."""

from __future__ import annotations

import asyncio
import io
import socket
import struct
import zlib
from pathlib import Path

import httpx
import pytest
from contract import METRIC_FAMILIES
from PIL import Image
from serve_helpers import ServerProcess, metric_total, png_bytes, wait_until

FAMILIES = sorted(METRIC_FAMILIES)


@pytest.fixture(scope="module")
def server(start_server, weights_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> ServerProcess:
    """Both models (beta the default), a broken checkpoint beside them, a 1 MiB upload limit."""
    directory = tmp_path_factory.mktemp("weights-with-broken")
    for path in weights_dir.iterdir():
        (directory / path.name).write_bytes(path.read_bytes())
    (directory / "broken.safetensors").write_bytes(b"not a checkpoint")
    args = ["--weights-dir", str(directory), "--default-model", "beta", "--max-upload-mb", "1"]
    srv = start_server([*args, "--torch-threads", "1", "--workers", "2", "--max-batch-size", "16"])
    srv.wait_ready()
    return srv


@pytest.fixture(scope="module")
def client(server: ServerProcess):
    with httpx.Client(base_url=server.url, timeout=30) as c:
        yield c


def test_predict_multipart_returns_sorted_top_k_from_the_default_model(client: httpx.Client) -> None:
    r = client.post("/predict?top_k=3", files={"file": ("a.png", png_bytes(), "image/png")})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["model"] == "beta"
    scores = [p["score"] for p in body["predictions"]]
    assert len(scores) == 3 and scores == sorted(scores, reverse=True)
    assert all(0.0 <= s <= 1.0 for s in scores)
    assert {"label", "index", "score"} <= set(body["predictions"][0])


def test_raw_body_and_multipart_give_the_same_answer(client: httpx.Client) -> None:
    data = png_bytes(77)
    raw = client.post("/predict?model=alpha", content=data, headers={"content-type": "image/png"})
    multipart = client.post("/predict?model=alpha", files={"file": ("a.png", data, "image/png")})
    assert raw.status_code == multipart.status_code == 200
    assert raw.json() == multipart.json()
    assert raw.json()["model"] == "alpha"


def test_rgb_jpeg_is_accepted_by_a_grayscale_model(client: httpx.Client) -> None:
    buf = io.BytesIO()
    Image.new("RGB", (640, 480), (200, 30, 30)).save(buf, "JPEG")
    r = client.post("/predict", files={"file": ("b.jpg", buf.getvalue(), "image/jpeg")})
    assert r.status_code == 200 and len(r.json()["predictions"]) == 5


def test_batch_endpoint_answers_in_upload_order(client: httpx.Client) -> None:
    images = [png_bytes(v) for v in (0, 120, 255)]
    singles = [client.post("/predict?top_k=2", files={"file": ("x.png", d, "image/png")}).json() for d in images]
    files = [("files", (f"{i}.png", d, "image/png")) for i, d in enumerate(images)]
    r = client.post("/predict/batch?top_k=2", files=files)
    assert r.status_code == 200
    results = r.json()["results"]
    assert len(results) == 3
    for single, batched in zip(singles, results, strict=True):
        assert [p["index"] for p in single["predictions"]] == [p["index"] for p in batched["predictions"]]
        for a, b in zip(single["predictions"], batched["predictions"], strict=True):
            assert a["score"] == pytest.approx(b["score"], abs=1e-4)


def test_models_lists_both_the_default_and_the_broken_file(client: httpx.Client) -> None:
    body = client.get("/models").json()
    assert body["default"] == "beta"
    assert sorted(m["name"] for m in body["models"]) == ["alpha", "beta"]
    assert "broken" in body["failed"]
    one = client.get("/models/alpha").json()
    assert one["default"] is False
    assert one["metadata"]["architecture"]["name"] == "resnet20"
    assert one["metadata"]["preprocessing"]["input_size"] == 28
    assert 1 <= one["batch_cap"] <= 16
    assert client.get("/models/beta").json()["metadata"]["architecture"]["name"] == "plain20"


def test_concurrent_requests_are_batched(server: ServerProcess, client: httpx.Client) -> None:
    before = client.get("/metrics").text
    images = [png_bytes(v) for v in range(64)]

    async def burst() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=server.url, timeout=60) as ac:
            jobs = [ac.post("/predict?model=alpha", files={"file": ("x.png", d, "image/png")}) for d in images]
            return await asyncio.gather(*jobs)

    responses = asyncio.run(burst())
    assert [r.status_code for r in responses] == [200] * 64
    assert all(r.json()["model"] == "alpha" and len(r.json()["predictions"]) == 5 for r in responses)
    after = client.get("/metrics").text
    count = metric_total(after, "resnet_serve_batch_size_count", model="alpha") - metric_total(
        before, "resnet_serve_batch_size_count", model="alpha"
    )
    total = metric_total(after, "resnet_serve_batch_size_sum", model="alpha") - metric_total(
        before, "resnet_serve_batch_size_sum", model="alpha"
    )
    assert total == 64
    assert total / count > 1.0, f"mean batch {total / count:.2f}: no dynamic batching under concurrency"


def _bomb_png() -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", 25_000, 25_000, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 99)) + chunk(b"IEND", b"")


def _truncated_jpeg() -> bytes:
    buf = io.BytesIO()
    Image.effect_noise((256, 256), 64).convert("RGB").save(buf, "JPEG", quality=95)
    return buf.getvalue()[:3000]


ERROR_CASES = {
    "garbage": ("/predict", {"files": {"file": ("x.png", b"not an image at all", "image/png")}}, 400),
    "truncated-jpeg": ("/predict", {"files": {"file": ("x.jpg", _truncated_jpeg(), "image/jpeg")}}, 400),
    "bomb": ("/predict", {"content": _bomb_png(), "headers": {"content-type": "image/png"}}, 400),
    "no-file-field": ("/predict", {"files": {"other": ("a.png", png_bytes(), "image/png")}}, 400),
    "empty-body": ("/predict", {"content": b"", "headers": {"content-type": "image/png"}}, 400),
    "unknown-model": ("/predict?model=nope", {"files": {"file": ("a.png", png_bytes(), "image/png")}}, 404),
    "text-plain": ("/predict", {"content": b"hello", "headers": {"content-type": "text/plain"}}, 415),
    "text-part": ("/predict", {"files": {"file": ("a.txt", b"hello", "text/plain")}}, 415),
    "too-large": (
        "/predict",
        {"content": b"\xff\xd8" + b"0" * 1_100_000, "headers": {"content-type": "image/jpeg"}},
        413,
    ),
    "too-large-multipart": ("/predict", {"files": {"file": ("a.jpg", b"0" * 1_100_000, "image/jpeg")}}, 413),
    "top-k-zero": ("/predict?top_k=0", {"files": {"file": ("a.png", png_bytes(), "image/png")}}, 422),
    "top-k-text": ("/predict?top_k=many", {"files": {"file": ("a.png", png_bytes(), "image/png")}}, 422),
    "top-k-blank": ("/predict?top_k=", {"files": {"file": ("a.png", png_bytes(), "image/png")}}, 422),
    "unknown-model-info": ("/models/nope", None, 404),
}


@pytest.mark.parametrize("case", list(ERROR_CASES))
def test_errors_have_the_right_status_and_a_json_detail(client: httpx.Client, case: str) -> None:
    path, kwargs, status = ERROR_CASES[case]
    r = client.get(path) if kwargs is None else client.post(path, **kwargs)
    assert r.status_code == status, r.text
    assert "detail" in r.json()


def test_service_stays_ready_after_errors(client: httpx.Client) -> None:
    client.post("/predict", content=b"junk", headers={"content-type": "image/png"})
    assert client.get("/ready").status_code == 200
    assert client.post("/predict", files={"file": ("a.png", png_bytes(), "image/png")}).status_code == 200


def test_a_client_that_hangs_up_mid_body_is_a_499_not_a_500(server: ServerProcess, client: httpx.Client) -> None:
    host, port = server.url.removeprefix("http://").split(":")
    head = "POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\nContent-Length: 5000\r\n\r\n"
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(head.encode() + png_bytes()[:100])  # then hang up with 4900 bytes still owed

    def hang_up_recorded() -> bool:
        return metric_total(client.get("/metrics").text, "resnet_serve_requests_total", status="499") >= 1

    wait_until(hang_up_recorded, 10, "the hang-up recorded as a 499")
    assert metric_total(client.get("/metrics").text, "resnet_serve_requests_total", status="500") == 0
    assert "unhandled error" not in server.log()
    assert client.get("/ready").status_code == 200


def test_request_id_is_echoed_or_generated_and_logged(server: ServerProcess, client: httpx.Client) -> None:
    r = client.post(
        "/predict", files={"file": ("a.png", png_bytes(), "image/png")}, headers={"X-Request-ID": "abc-123"}
    )
    assert r.headers["x-request-id"] == "abc-123"
    generated = client.get("/health").headers["x-request-id"]
    assert len(generated) == 32 and generated != client.get("/health").headers["x-request-id"]
    line = next(record for record in server.records() if record.get("request_id") == "abc-123")
    assert (line["model"], line["status"], line["path"]) == ("beta", 200, "/predict")
    assert line["batch_size"] >= 1 and line["queue_ms"] >= 0 and line["inference_ms"] > 0


def test_metrics_have_every_family_and_count_requests(client: httpx.Client) -> None:
    client.post("/predict", files={"file": ("a.png", png_bytes(), "image/png")})
    text = client.get("/metrics").text
    for family in FAMILIES:
        assert family in text
    assert metric_total(text, "resnet_serve_requests_total", route="/predict", status="200") >= 1
    assert metric_total(text, "resnet_serve_images_total", model="beta") >= 1
    assert 'arch="plain20"' in text
    assert metric_total(text, "resnet_serve_model_info", model="alpha", device="cpu", precision="fp32") == 1


def test_openapi_documents_every_endpoint_and_error(client: httpx.Client) -> None:
    assert client.get("/docs").status_code == 200
    spec = client.get("/openapi.json").json()
    paths = spec["paths"]
    for path in ("/predict", "/predict/batch", "/models", "/models/{name}", "/health", "/ready", "/metrics"):
        assert path in paths
    predict = paths["/predict"]["post"]
    assert {"400", "404", "413", "415", "422", "503", "504"} <= set(predict["responses"])
    assert {"multipart/form-data", "image/*"} <= set(predict["requestBody"]["content"])
    assert {p["name"] for p in predict["parameters"]} == {"model", "top_k"}
