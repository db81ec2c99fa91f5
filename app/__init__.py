"""ResNet Serve: the HTTP inference service (``resnet-serve``, ``python -m app``)."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("resnet-serve")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"
