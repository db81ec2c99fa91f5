"""ResNet Serve: the HTTP inference service (``resnet-serve``, ``python -m app``).

A request's path, file by file: ``middleware`` (request id, metrics, log line) -> ``routes/predict``
-> ``registry`` (name -> service) -> ``uploads`` (read the body) -> ``service`` (``classify``) ->
``preprocess`` (bytes -> tensor) -> ``batcher`` (queue, batch) -> ``engine`` (forward, top-k).
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("resnet-serve")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"
