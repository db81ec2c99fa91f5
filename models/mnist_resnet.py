"""The small residual network of the classic MNIST tutorial, for 28x28 inputs.

Channels grow 1 -> 20 -> 40 -> 80 -> 160 through a stem convolution and three residual blocks, each
followed by 2x2 max-pooling (28 -> 14 -> 7 -> 3), then global average pooling and an fc 160 -> 10.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from models.registry import register_model
from models.resnet import BasicBlock, conv3x3, init_weights

__all__ = ["MnistResNet", "mnist_resnet", "mnist_plain"]


class MnistResNet(nn.Module):
    """Stem conv 3x3 (in -> 20), then BasicBlock + max-pool per stage (40, 80, 160), then fc."""

    def __init__(
        self, *, num_classes: int = 10, in_channels: int = 1, residual: bool = True, zero_init_residual: bool = False
    ) -> None:
        super().__init__()
        self.conv1 = conv3x3(in_channels, 20)
        self.bn1 = nn.BatchNorm2d(20)
        self.relu = nn.ReLU(inplace=True)
        self.layer1 = BasicBlock(20, 40, residual=residual)
        self.layer2 = BasicBlock(40, 80, residual=residual)
        self.layer3 = BasicBlock(80, 160, residual=residual)
        self.pool = nn.MaxPool2d(2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(160, num_classes)
        init_weights(self, zero_init_residual=zero_init_residual)

    def forward_features(self, x: Tensor) -> Tensor:
        """Everything up to (not including) the global pool."""
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.pool(self.layer1(x))
        x = self.pool(self.layer2(x))
        return self.pool(self.layer3(x))

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(torch.flatten(self.avgpool(self.forward_features(x)), 1))


@register_model(family="mnist", native_input_size=28)
def mnist_resnet(**kwargs: Any) -> MnistResNet:
    """The MNIST tutorial's residual network (0.47M parameters)."""
    kwargs.setdefault("num_classes", 10)
    kwargs.setdefault("in_channels", 1)
    return MnistResNet(**kwargs)


@register_model(family="mnist", native_input_size=28, residual=False)
def mnist_plain(**kwargs: Any) -> MnistResNet:
    """The MNIST tutorial network without its shortcuts."""
    kwargs.setdefault("num_classes", 10)
    kwargs.setdefault("in_channels", 1)
    return MnistResNet(residual=False, **kwargs)
