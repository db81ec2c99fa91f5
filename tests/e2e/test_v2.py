"""The Open Inference Protocol (KServe v2) against a real ``resnet-serve`` process serving the shipped model.

The client is the real ``tritonclient[http]`` for every endpoint, the binary tensor data extension included;
its answers must be ``POST /predict``'s for the same Fashion-MNIST images (the checkpoint's golden set). One
server, with an API key; plain httpx where the wire itself is checked (headers, the error body).
"""

from __future__ import annotations

import base64
import io
import json

import httpx
import numpy as np
import pytest
import tritonclient.http as triton
from PIL import Image
from serve_helpers import SHIPPED, SHIPPED_KEY, ServerProcess, metric_total
from tritonclient.utils import InferenceServerException

from models import read_golden

MODEL = SHIPPED.stem
IMAGES = read_golden(SHIPPED)  # PNGs of real Fashion-MNIST images, and their classes
CLASSES = 10
INFER_ROUTE = "/v2/models/{model_name}/infer"


def auth() -> dict[str, str]:
    """The API key header: a fresh dict per call (tritonclient adds its own headers to the dict it is given)."""
    return {"Authorization": f"Bearer {SHIPPED_KEY}"}


@pytest.fixture(scope="module")
def client(shipped_server: ServerProcess) -> triton.InferenceServerClient:
    return triton.InferenceServerClient(shipped_server.url.removeprefix("http://"), network_timeout=60)


@pytest.fixture(scope="module")
def expected(shipped_server: ServerProcess) -> list[dict]:
    """``POST /predict``'s answer (every class) for the first 6 golden images."""
    answers = []
    for data in IMAGES.images[:6]:
        response = httpx.post(
            f"{shipped_server.url}/predict",
            params={"top_k": CLASSES},
            files={"file": ("image.png", data, "image/png")},
            headers=auth(),
            timeout=30,
        )
        assert response.status_code == 200, response.text
        answers.append(response.json())
    return answers


def probabilities(answer: dict) -> list[float]:
    """A ``/predict`` answer's scores, by class index."""
    return [p["score"] for p in sorted(answer["predictions"], key=lambda p: p["index"])]


def assert_same(result: np.ndarray, answers: list[dict]) -> None:
    assert result.shape == (len(answers), CLASSES)
    for row, answer in zip(result, answers, strict=True):
        assert int(row.argmax()) == answer["predictions"][0]["index"]
        np.testing.assert_allclose(row, probabilities(answer), atol=1e-5)


def bytes_input(images: list[bytes], binary: bool) -> triton.InferInput:
    """The ``image`` input: raw bytes with the binary extension, base64 in JSON."""
    tensor = triton.InferInput("image", [len(images)], "BYTES")
    elements = images if binary else [base64.b64encode(data) for data in images]
    tensor.set_data_from_numpy(np.array(elements, dtype=np.object_), binary_data=binary)
    return tensor


def pixels(images: list[bytes]) -> np.ndarray:
    """The images decoded: uint8 [N, 1, 28, 28]."""
    return np.stack([np.asarray(Image.open(io.BytesIO(data)).convert("L"))[None] for data in images])


def test_health_needs_no_key_and_the_rest_does(
    shipped_server: ServerProcess, client: triton.InferenceServerClient
) -> None:
    assert client.is_server_live()
    assert client.is_server_ready()
    response = httpx.get(f"{shipped_server.url}/v2/models/{MODEL}", timeout=10)
    assert response.status_code == 401
    assert response.json() == {"error": "missing or invalid API key (Authorization: Bearer ...)"}
    with pytest.raises(InferenceServerException) as failed:
        client.get_server_metadata()
    assert failed.value.status() == "401"


def test_server_and_model_metadata(client: triton.InferenceServerClient, expected: list[dict]) -> None:
    server = client.get_server_metadata(headers=auth())
    assert server["name"] == "resnet-serve"
    assert set(server["extensions"]) == {"binary_tensor_data", "classification"}
    metadata = client.get_model_metadata(MODEL, headers=auth())
    assert metadata["name"] == MODEL
    assert metadata["versions"] == [expected[0]["version"]]
    assert metadata["inputs"] == [
        {"name": "image", "datatype": "BYTES", "shape": [-1]},
        {"name": "pixels", "datatype": "UINT8", "shape": [-1, 1, 28, 28]},
    ]
    assert metadata["outputs"] == [{"name": "probabilities", "datatype": "FP32", "shape": [-1, CLASSES]}]
    assert client.get_model_metadata(MODEL, expected[0]["version"], headers=auth())["name"] == MODEL
    assert client.is_model_ready(MODEL, headers=auth())
    assert client.is_model_ready(MODEL, expected[0]["version"], headers=auth())
    assert not client.is_model_ready("no-such-model", headers=auth())
    assert not client.is_model_ready(MODEL, "0000000000000000", headers=auth())


@pytest.mark.parametrize("binary_in", [True, False], ids=["binary-in", "json-in"])
@pytest.mark.parametrize("binary_out", [True, False], ids=["binary-out", "json-out"])
@pytest.mark.parametrize("count", [1, 6])
def test_encoded_images_answer_as_predict(
    client: triton.InferenceServerClient, expected: list[dict], binary_in: bool, binary_out: bool, count: int
) -> None:
    result = client.infer(
        MODEL,
        [bytes_input(IMAGES.images[:count], binary_in)],
        outputs=[triton.InferRequestedOutput("probabilities", binary_data=binary_out)],
        request_id="r1",
        headers=auth(),
    )
    assert_same(result.as_numpy("probabilities"), expected[:count])
    response = result.get_response()
    assert (response["model_name"], response["model_version"], response["id"]) == (
        MODEL,
        expected[0]["version"],
        "r1",
    )


def test_no_requested_output_gives_every_output_in_binary(
    client: triton.InferenceServerClient, expected: list[dict]
) -> None:
    result = client.infer(MODEL, [bytes_input(IMAGES.images[:2], binary=True)], headers=auth())
    assert_same(result.as_numpy("probabilities"), expected[:2])
    assert result.get_output("probabilities")["parameters"]["binary_data_size"] == 2 * CLASSES * 4


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
@pytest.mark.parametrize("datatype", ["UINT8", "FP32"])
def test_pixel_tensors_answer_as_predict(
    client: triton.InferenceServerClient, expected: list[dict], datatype: str, binary: bool
) -> None:
    array = pixels(IMAGES.images[:6])
    if datatype == "FP32":
        array = array.astype(np.float32) / 255  # torchvision's ToTensor scale
    tensor = triton.InferInput("pixels", list(array.shape), datatype)
    tensor.set_data_from_numpy(array, binary_data=binary)
    result = client.infer(MODEL, [tensor], headers=auth())
    assert_same(result.as_numpy("probabilities"), expected)


def test_one_image_tensor_without_the_batch_dimension(
    client: triton.InferenceServerClient, expected: list[dict]
) -> None:
    tensor = triton.InferInput("pixels", [1, 28, 28], "UINT8")
    tensor.set_data_from_numpy(pixels(IMAGES.images[:1])[0])
    assert_same(client.infer(MODEL, [tensor], headers=auth()).as_numpy("probabilities"), expected[:1])


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_classification_extension_gives_score_index_label(
    client: triton.InferenceServerClient, expected: list[dict], binary: bool
) -> None:
    output = triton.InferRequestedOutput("probabilities", binary_data=binary, class_count=3)
    result = client.infer(MODEL, [bytes_input(IMAGES.images[:3], binary=True)], outputs=[output], headers=auth())
    strings = result.as_numpy("probabilities")
    assert strings.shape == (3, 3)
    for row, answer in zip(strings, expected[:3], strict=True):
        parsed = [(s.decode() if isinstance(s, bytes) else s).split(":", 2) for s in row]
        top3 = answer["predictions"][:3]
        assert [(int(index), label) for _, index, label in parsed] == [(p["index"], p["label"]) for p in top3]
        np.testing.assert_allclose([float(score) for score, _, _ in parsed], [p["score"] for p in top3], atol=1e-5)


def test_the_answers_match_the_true_classes(client: triton.InferenceServerClient) -> None:
    """The shipped model is right on most golden images: the tensors reach it the right way round."""
    count = 32
    tensor = triton.InferInput("pixels", [count, 1, 28, 28], "UINT8")
    tensor.set_data_from_numpy(pixels(IMAGES.images[:count]))
    predicted = client.infer(MODEL, [tensor], headers=auth()).as_numpy("probabilities").argmax(axis=1)
    assert np.mean(predicted == np.array(IMAGES.targets[:count])) >= 0.8


def failure(call) -> InferenceServerException:
    with pytest.raises(InferenceServerException) as failed:
        call()
    return failed.value


def test_errors_have_the_native_statuses_and_the_v2_shape(client: triton.InferenceServerClient) -> None:
    image = [bytes_input(IMAGES.images[:1], binary=True)]
    unknown = failure(lambda: client.infer("no-such-model", image, headers=auth()))
    assert (unknown.status(), "unknown model 'no-such-model'" in unknown.message()) == ("404", True)
    corrupt = failure(lambda: client.infer(MODEL, [bytes_input([b"\x89PNG not really"], binary=True)], headers=auth()))
    assert corrupt.status() == "400"
    wrong = triton.InferInput("pixels", [1, 1, 27, 27], "UINT8")
    wrong.set_data_from_numpy(np.zeros((1, 1, 27, 27), dtype=np.uint8))
    shape = failure(lambda: client.infer(MODEL, [wrong], headers=auth()))
    assert shape.status() == "400"
    assert "shape [1, 1, 27, 27] is not [N, 1, 28, 28]" in shape.message()
    out_of_range = triton.InferInput("pixels", [1, 1, 28, 28], "FP32")
    out_of_range.set_data_from_numpy(np.full((1, 1, 28, 28), 2.0, dtype=np.float32))
    assert "within [0, 1]" in failure(lambda: client.infer(MODEL, [out_of_range], headers=auth())).message()
    wrong_output = [triton.InferRequestedOutput("logits")]
    assert failure(lambda: client.infer(MODEL, image, outputs=wrong_output, headers=auth())).status() == "400"


def test_plain_json_and_the_binary_extension_on_the_wire(shipped_server: ServerProcess, expected: list[dict]) -> None:
    """What the README shows with curl, and the binary response's framing."""
    url = f"{shipped_server.url}/v2/models/{MODEL}/infer"
    image = base64.b64encode(IMAGES.images[0]).decode()
    body = {"inputs": [{"name": "image", "shape": [1], "datatype": "BYTES", "data": [image]}]}
    response = httpx.post(url, json=body, headers=auth(), timeout=30)
    assert response.status_code == 200, response.text
    assert "inference-header-content-length" not in response.headers
    (output,) = response.json()["outputs"]
    assert (output["name"], output["datatype"], output["shape"]) == ("probabilities", "FP32", [1, CLASSES])
    np.testing.assert_allclose(output["data"], probabilities(expected[0]), atol=1e-5)

    binary = {**body, "outputs": [{"name": "probabilities", "parameters": {"binary_data": True}}]}
    response = httpx.post(url, json=binary, headers=auth(), timeout=30)
    length = int(response.headers["inference-header-content-length"])
    header, raw = json.loads(response.content[:length]), response.content[length:]
    (output,) = header["outputs"]
    assert output["parameters"] == {"binary_data_size": len(raw)} == {"binary_data_size": CLASSES * 4}
    np.testing.assert_allclose(np.frombuffer(raw, dtype="<f4"), probabilities(expected[0]), atol=1e-5)


def test_v2_requests_and_images_are_counted(
    shipped_server: ServerProcess, client: triton.InferenceServerClient
) -> None:
    def counts() -> tuple[float, ...]:
        text = shipped_server.get("/metrics").text
        return (
            metric_total(text, "resnet_serve_requests_total", route=INFER_ROUTE, status="200"),
            metric_total(text, "resnet_serve_requests_total", route=INFER_ROUTE, status="400"),
            metric_total(text, "resnet_serve_images_total", model=MODEL),
            metric_total(text, "resnet_serve_rejected_total", reason="bad_image"),
        )

    before = counts()
    client.infer(MODEL, [bytes_input(IMAGES.images[:4], binary=True)], headers=auth())
    failure(lambda: client.infer(MODEL, [bytes_input([b"junk"], binary=True)], headers=auth()))
    after = counts()
    assert [a - b for a, b in zip(after, before, strict=True)] == [1, 1, 4, 1]
