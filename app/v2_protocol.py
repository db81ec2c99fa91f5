"""The Open Inference Protocol (KServe v2) on the wire: inference requests in, responses out.

Knows nothing of HTTP routing or models in service: ``parse_infer_request`` reads a request body (JSON,
or a JSON header of ``Inference-Header-Content-Length`` bytes followed by the binary tensor data
extension's raw tensors); ``encoded_images`` and ``pixel_tensors`` turn its one input into what
``ModelService`` classifies; ``infer_response`` renders predictions as the ``probabilities`` output
(or, with the classification extension, Triton's ``"score:index:label"`` strings), in JSON or binary.

Inputs (exactly one per request):

- ``image``, ``BYTES``, shape ``[N]``: encoded images (PNG, JPEG, ...); in JSON each element is the image
  base64-encoded (JSON strings cannot carry raw bytes), in binary each is 4-byte little-endian
  length-prefixed.
- ``pixels``, ``UINT8`` (0..255) or ``FP32`` (0..1, torchvision's ``ToTensor`` scale, converted exactly to
  ``round(x * 255)``), shape ``[N, C, H, W]`` or ``[C, H, W]`` at the model's input: no decoding.

Every malformed request is a ``BadRequest`` (400) whose message says what to fix.
"""

from __future__ import annotations

import base64
import binascii
import math
import struct
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson
import torch
from torch import Tensor

from app.errors import BadRequest

__all__ = [
    "HEADER_LENGTH",
    "IMAGE_INPUT",
    "OUTPUT",
    "PIXELS_INPUT",
    "InferRequest",
    "RequestedOutput",
    "encoded_images",
    "infer_response",
    "parse_infer_request",
    "pixel_tensors",
]

#: The binary tensor data extension's header: the JSON part's length, in requests and responses.
HEADER_LENGTH = "Inference-Header-Content-Length"
IMAGE_INPUT = "image"
PIXELS_INPUT = "pixels"
OUTPUT = "probabilities"
#: Input name -> the datatypes it accepts.
INPUTS = {IMAGE_INPUT: ("BYTES",), PIXELS_INPUT: ("UINT8", "FP32")}
_NUMPY = {"UINT8": np.dtype(np.uint8), "FP32": np.dtype("<f4")}


@dataclass(frozen=True)
class RequestedOutput:
    """An output the client asked for: binary or JSON; ``class_count`` > 0: the classification extension."""

    name: str
    binary: bool
    class_count: int = 0


@dataclass
class InferRequest:
    """A parsed inference request: its one input (``data``: JSON's list, or the binary extension's bytes)."""

    id: str | None
    input_name: str
    datatype: str
    shape: list[int]
    data: list[Any] | bytes
    outputs: list[RequestedOutput]

    @property
    def count(self) -> int:
        """Elements in the input tensor."""
        return math.prod(self.shape)


def _object(value: Any, what: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise BadRequest(f"{what} must be a JSON object")
    return value


def _flag(parameters: dict[str, Any], name: str, default: bool) -> bool:
    value = parameters.get(name, default)
    if not isinstance(value, bool):
        raise BadRequest(f"parameter {name!r} must be true or false")
    return value


def _count(parameters: dict[str, Any], name: str) -> int:
    value = parameters.get(name, 0)
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise BadRequest(f"parameter {name!r} must be a non-negative integer")
    return value


def _outputs(header: dict[str, Any], binary_default: bool) -> list[RequestedOutput]:
    requested = header.get("outputs")
    if requested is None:
        return [RequestedOutput(OUTPUT, binary_default)]
    if not isinstance(requested, list) or not requested:
        raise BadRequest("'outputs' must be a non-empty list")
    outputs = []
    for output in requested:
        output = _object(output, "each output")
        if output.get("name") != OUTPUT:
            raise BadRequest(f"unknown output {output.get('name')!r}; this model has one: {OUTPUT!r}")
        parameters = _object(output.get("parameters"), "an output's 'parameters'")
        binary = _flag(parameters, "binary_data", binary_default)
        outputs.append(RequestedOutput(OUTPUT, binary, _count(parameters, "classification")))
    return outputs


def parse_infer_request(body: bytes, header_length: str | None) -> InferRequest:
    """A request body -> ``InferRequest``; ``header_length``: the ``Inference-Header-Content-Length`` header."""
    if header_length is None:
        header_bytes, binary = body, b""
    else:
        if not header_length.isdigit() or int(header_length) > len(body):
            raise BadRequest(f"{HEADER_LENGTH} {header_length!r} is not a length within the {len(body)} byte body")
        header_bytes, binary = body[: int(header_length)], body[int(header_length) :]
    try:
        header = orjson.loads(header_bytes)
    except orjson.JSONDecodeError:
        raise BadRequest("the inference request is not valid JSON") from None
    header = _object(header, "the inference request")
    request_id = header.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise BadRequest("'id' must be a string")
    parameters = _object(header.get("parameters"), "'parameters'")
    outputs = _outputs(header, _flag(parameters, "binary_data_output", False))
    inputs = header.get("inputs")
    if not isinstance(inputs, list) or len(inputs) != 1:
        raise BadRequest(f"send exactly one input: {IMAGE_INPUT!r} (BYTES) or {PIXELS_INPUT!r} (UINT8 or FP32)")
    tensor = _object(inputs[0], "the input")
    name, datatype, shape = tensor.get("name"), tensor.get("datatype"), tensor.get("shape")
    if name not in INPUTS:
        raise BadRequest(f"unknown input {name!r}; send {IMAGE_INPUT!r} (BYTES) or {PIXELS_INPUT!r} (UINT8 or FP32)")
    if datatype not in INPUTS[name]:
        raise BadRequest(f"input {name!r} is {' or '.join(INPUTS[name])}, not {datatype!r}")
    if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape):
        raise BadRequest(f"input {name!r}: 'shape' must be a list of non-negative integers")
    input_parameters = _object(tensor.get("parameters"), "the input's 'parameters'")
    data: list[Any] | bytes
    if "binary_data_size" in input_parameters:
        size = _count(input_parameters, "binary_data_size")
        if size != len(binary):
            raise BadRequest(f"input {name!r}: binary_data_size {size} but {len(binary)} bytes follow the header")
        data = binary
    else:
        if binary:
            raise BadRequest(f"{len(binary)} bytes follow the header but no input has a binary_data_size")
        values = tensor.get("data")
        if not isinstance(values, list):
            raise BadRequest(f"input {name!r} has neither 'data' nor parameters.binary_data_size")
        data = values
    return InferRequest(request_id, name, datatype, shape, data, outputs)


def _flat(data: list[Any]) -> list[Any]:
    """JSON tensor data, row-major: nested lists flattened."""
    if not any(isinstance(item, list) for item in data):
        return data
    return [leaf for item in data for leaf in (_flat(item) if isinstance(item, list) else [item])]


def encoded_images(request: InferRequest, max_images: int) -> list[bytes]:
    """A ``BYTES`` input's elements: the encoded images (base64 in JSON, length-prefixed in binary)."""
    count = request.count
    if not 0 < count <= max_images:
        raise BadRequest(f"input {request.input_name!r}: {count} images; send 1 to {max_images} (--max-batch-files)")
    if isinstance(request.data, bytes):
        images = _length_prefixed(request.data)
    else:
        images = []
        for element in _flat(request.data):
            if not isinstance(element, str):
                raise BadRequest(f"input {request.input_name!r}: in JSON, each BYTES element is a base64 string")
            try:
                images.append(base64.b64decode(element, validate=True))
            except binascii.Error:
                raise BadRequest(f"input {request.input_name!r}: an element is not valid base64") from None
    if len(images) != count:
        raise BadRequest(f"input {request.input_name!r}: shape {request.shape} but {len(images)} elements")
    return images


def _length_prefixed(data: bytes) -> list[bytes]:
    """The binary extension's BYTES elements: each a 4-byte little-endian length, then that many bytes."""
    elements, offset = [], 0
    while offset < len(data):
        if offset + 4 > len(data):
            raise BadRequest("binary BYTES data is truncated (an element's 4-byte length)")
        (length,) = struct.unpack_from("<I", data, offset)
        offset += 4
        if offset + length > len(data):
            raise BadRequest("binary BYTES data is truncated (an element is shorter than its length)")
        elements.append(data[offset : offset + length])
        offset += length
    return elements


def pixel_tensors(request: InferRequest, input_shape: tuple[int, int, int], max_images: int) -> list[Tensor]:
    """A ``UINT8`` or ``FP32`` input -> uint8 (C, H, W) tensors at the model's ``input_shape``."""
    name, shape = request.input_name, request.shape
    if list(shape[-3:]) != list(input_shape) or len(shape) not in (3, 4):
        expected = ", ".join(str(d) for d in input_shape)
        raise BadRequest(f"input {name!r}: shape {shape} is not [N, {expected}] or [{expected}] (the model's input)")
    count = 1 if len(shape) == 3 else shape[0]
    if not 0 < count <= max_images:
        raise BadRequest(f"input {name!r}: {count} images; send 1 to {max_images} (--max-batch-files)")
    dtype = _NUMPY[request.datatype]
    if isinstance(request.data, bytes):
        if len(request.data) != request.count * dtype.itemsize:
            raise BadRequest(f"input {name!r}: shape {shape} needs {request.count * dtype.itemsize} bytes of {dtype}")
        array = np.frombuffer(request.data, dtype=dtype)
    else:
        try:
            array = np.asarray(_flat(request.data), dtype=np.float64)
        except (TypeError, ValueError):
            raise BadRequest(f"input {name!r}: 'data' must be numbers") from None
        if array.size != request.count:
            raise BadRequest(f"input {name!r}: shape {shape} but {array.size} elements")
        if request.datatype == "UINT8" and not (
            np.all(array == np.round(array)) and np.all((array >= 0) & (array <= 255))
        ):
            raise BadRequest(f"input {name!r}: UINT8 elements must be integers from 0 to 255")
        array = array.astype(dtype)
    if request.datatype == "FP32":
        if not (np.all(np.isfinite(array)) and np.all((array >= 0) & (array <= 1))):
            raise BadRequest(f"input {name!r}: FP32 pixels must be finite and within [0, 1]")
        array = np.rint(array * np.float32(255)).astype(np.uint8)
    tensor = torch.from_numpy(array.copy() if not array.flags.writeable else array)
    return list(tensor.reshape(count, *input_shape).unbind(0))


def _classification(predictions: list[dict[str, Any]], class_count: int) -> list[str]:
    """Triton's classification extension: ``"score:index:label"``, best first."""
    return [f"{p['score']:f}:{p['index']}:{p['label']}" for p in predictions[:class_count]]


def _bytes_elements(strings: list[str]) -> bytes:
    encoded = [s.encode() for s in strings]
    return b"".join(struct.pack("<I", len(e)) + e for e in encoded)


def infer_response(
    model: str, version: str | None, request: InferRequest, predictions: list[list[dict[str, Any]]], num_classes: int
) -> tuple[bytes, int | None]:
    """The response body, and the JSON header's length when any output is binary (else ``None``).

    ``predictions``: per image, every class (``top_k`` = the number of classes), best first.
    """
    header: dict[str, Any] = {"model_name": model, "model_version": version or ""}
    if request.id is not None:
        header["id"] = request.id
    outputs, binary = [], []
    for output in request.outputs:
        tensor: dict[str, Any]
        if output.class_count:
            k = min(output.class_count, num_classes)
            rows = [_classification(p, k) for p in predictions]
            tensor = {"name": output.name, "datatype": "BYTES", "shape": [len(rows), k]}
            strings = [s for row in rows for s in row]
            raw = _bytes_elements(strings) if output.binary else None
            data: list[Any] = strings
        else:
            probabilities = [0.0] * (len(predictions) * num_classes)
            for row, image in enumerate(predictions):
                for p in image:
                    probabilities[row * num_classes + p["index"]] = p["score"]
            tensor = {"name": output.name, "datatype": "FP32", "shape": [len(predictions), num_classes]}
            raw = np.asarray(probabilities, dtype="<f4").tobytes() if output.binary else None
            data = probabilities
        if raw is None:
            tensor["data"] = data
        else:
            tensor["parameters"] = {"binary_data_size": len(raw)}
            binary.append(raw)
        outputs.append(tensor)
    header["outputs"] = outputs
    json_header = orjson.dumps(header)
    if not binary:
        return json_header, None
    return b"".join([json_header, *binary]), len(json_header)
