"""A Python client for ``resnet-serve``: ``ResNetClient`` (blocking) and ``AsyncResNetClient`` on httpx, typed
results, and the ``resnet-predict`` command (``client.cli``). See docs/client.md."""

from client.api import DEFAULT_URL, AsyncResNetClient, ImageInput, ResNetClient
from client.errors import ClientError, ServerError, TransportError, Unreachable
from client.results import ModelInfo, ModelList, Prediction, PredictResult, Readiness

__all__ = [
    "DEFAULT_URL",
    "AsyncResNetClient",
    "ClientError",
    "ImageInput",
    "ModelInfo",
    "ModelList",
    "Prediction",
    "PredictResult",
    "Readiness",
    "ResNetClient",
    "ServerError",
    "TransportError",
    "Unreachable",
]
