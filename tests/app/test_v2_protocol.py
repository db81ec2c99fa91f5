"""app.v2_protocol: requests parsed (JSON and the binary extension), tensors checked, responses framed."""

from __future__ import annotations

import base64
import json
import struct

import numpy as np
import orjson
import pytest
import torch

from app.errors import BadRequest
from app.v2_protocol import encoded_images, infer_response, parse_infer_request, pixel_tensors

SHAPE = (1, 2, 2)


def body(*inputs: dict, **extra: object) -> bytes:
    return orjson.dumps({"inputs": list(inputs), **extra})


def binary(header: dict, raw: bytes) -> tuple[bytes, str]:
    head = orjson.dumps(header)
    return head + raw, str(len(head))


def test_bytes_elements_in_json_are_base64_and_in_binary_length_prefixed() -> None:
    images = [b"first", b"second image"]
    data = [base64.b64encode(i).decode() for i in images]
    request = parse_infer_request(body({"name": "image", "datatype": "BYTES", "shape": [2], "data": data}), None)
    assert encoded_images(request, 8) == images
    raw = b"".join(struct.pack("<I", len(i)) + i for i in images)
    header: dict = {
        "inputs": [{"name": "image", "datatype": "BYTES", "shape": [2], "parameters": {"binary_data_size": 25}}]
    }
    assert encoded_images(parse_infer_request(*binary(header, raw)), 8) == images
    header["inputs"][0]["parameters"] = {"binary_data_size": 24}
    with pytest.raises(BadRequest, match="truncated"):
        encoded_images(parse_infer_request(*binary(header, raw[:-1])), 8)


@pytest.mark.parametrize(
    ("request_body", "header_length", "message"),
    [
        (b"{", None, "not valid JSON"),
        (body(), None, "exactly one input"),
        (body({"name": "logits", "datatype": "FP32", "shape": [1], "data": [1]}), None, "unknown input"),
        (body({"name": "image", "datatype": "FP32", "shape": [1], "data": [1]}), None, "is BYTES, not 'FP32'"),
        (body({"name": "image", "datatype": "BYTES", "shape": [-1], "data": []}), None, "non-negative"),
        (body({"name": "image", "datatype": "BYTES", "shape": [1]}), None, "neither 'data'"),
        (b"{}", "9", "not a length within"),
    ],
)
def test_malformed_requests_are_bad_requests(request_body: bytes, header_length: str | None, message: str) -> None:
    with pytest.raises(BadRequest, match=message):
        parse_infer_request(request_body, header_length)


def test_fp32_pixels_become_exactly_their_uint8_values() -> None:
    values = np.arange(256, dtype=np.float32) / 255
    header = {"name": "pixels", "datatype": "FP32", "shape": [64, *SHAPE], "parameters": {"binary_data_size": 1024}}
    request = parse_infer_request(*binary({"inputs": [header]}, values.astype("<f4").tobytes()))
    tensors = pixel_tensors(request, SHAPE, 64)
    assert torch.stack(tensors).flatten().tolist() == list(range(256))
    assert all(t.dtype == torch.uint8 and t.shape == SHAPE for t in tensors)


@pytest.mark.parametrize(
    ("datatype", "shape", "data", "message"),
    [
        ("UINT8", [1, 1, 3, 3], [0] * 9, r"shape \[1, 1, 3, 3\] is not \[N, 1, 2, 2\]"),
        ("UINT8", [1, 1, 2, 2], [0, 1, 2], "but 3 elements"),
        ("UINT8", [1, 2, 2], [0, 1, 2, 256], "0 to 255"),
        ("FP32", [1, 2, 2], [0, 0.5, 1, 1.5], r"within \[0, 1\]"),
        ("UINT8", [3, 1, 2, 2], [0] * 12, "1 to 2"),
    ],
)
def test_pixel_tensors_are_checked(datatype: str, shape: list[int], data: list, message: str) -> None:
    request = parse_infer_request(body({"name": "pixels", "datatype": datatype, "shape": shape, "data": data}), None)
    with pytest.raises(BadRequest, match=message):
        pixel_tensors(request, SHAPE, 2)


def test_responses_in_json_and_binary_with_the_classification_extension() -> None:
    predictions = [[{"label": "b", "index": 1, "score": 0.75}, {"label": "a", "index": 0, "score": 0.25}]]
    outputs = [
        {"name": "probabilities"},
        {"name": "probabilities", "parameters": {"binary_data": True, "classification": 1}},
    ]
    request = parse_infer_request(
        body({"name": "image", "datatype": "BYTES", "shape": [1], "data": ["AA=="]}, id="x", outputs=outputs), None
    )
    content, length = infer_response("m", "v1", request, predictions, 2)
    assert length is not None
    header = json.loads(content[:length])
    assert header["id"] == "x" and header["model_version"] == "v1"
    first, second = header["outputs"]
    assert first == {"name": "probabilities", "datatype": "FP32", "shape": [1, 2], "data": [0.25, 0.75]}
    label = b"0.750000:1:b"
    assert second["parameters"] == {"binary_data_size": 4 + len(label)}
    assert content[length:] == struct.pack("<I", len(label)) + label
