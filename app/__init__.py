"""ResNet Serve: the HTTP inference service (``resnet-serve``, ``python -m app``)."""
