"""The ResNet family of "Deep Residual Learning for Image Recognition" (He et al., 2015).

ImageNet-style ResNet-18/34/50/101/152 have state_dict keys and shapes identical to torchvision's,
so torchvision weights load with ``strict=True`` and give identical outputs. CIFAR-style
ResNet-20/32/44/56/110 follow section 4.2 of the paper. Every net has a ``plain`` twin: the same
layers with the shortcut connections removed (the paper's baseline for the degradation problem).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from models.registry import register_model

__all__ = ["BasicBlock", "Bottleneck", "ResNet", "CifarResNet"]


def conv3x3(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    """3x3 convolution with padding 1 and no bias (a BatchNorm follows)."""
    return nn.Conv2d(in_planes, out_planes, kernel_size=3, stride=stride, padding=1, bias=False)


def conv1x1(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    """1x1 convolution with no bias (a BatchNorm follows)."""
    return nn.Conv2d(in_planes, out_planes, kernel_size=1, stride=stride, bias=False)


def projection(in_planes: int, out_planes: int, stride: int) -> nn.Sequential:
    """The paper's option B shortcut: 1x1 conv + BN, used when the stride or the width changes."""
    return nn.Sequential(conv1x1(in_planes, out_planes, stride), nn.BatchNorm2d(out_planes))


class BasicBlock(nn.Module):
    """Two 3x3 convolutions; ``out = relu(F(x) + shortcut(x))``, or ``relu(F(x))`` when plain."""

    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1, *, residual: bool = True) -> None:
        super().__init__()
        self.conv1 = conv3x3(in_planes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.residual = residual
        needs_projection = stride != 1 or in_planes != planes
        self.downsample = projection(in_planes, planes, stride) if residual and needs_projection else None
        self.stride = stride

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.residual:
            out = out + (x if self.downsample is None else self.downsample(x))
        return self.relu(out)


class Bottleneck(nn.Module):
    """1x1 reduce -> 3x3 -> 1x1 expand (x4).

    Like torchvision (ResNet v1.5) the stride sits on the 3x3 convolution, not on the first 1x1 as
    in the paper; this is what torchvision's weights were trained with.
    """

    expansion = 4

    def __init__(self, in_planes: int, planes: int, stride: int = 1, *, residual: bool = True) -> None:
        super().__init__()
        width = planes
        out_planes = planes * self.expansion
        self.conv1 = conv1x1(in_planes, width)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = conv3x3(width, width, stride)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = conv1x1(width, out_planes)
        self.bn3 = nn.BatchNorm2d(out_planes)
        self.relu = nn.ReLU(inplace=True)
        self.residual = residual
        needs_projection = stride != 1 or in_planes != out_planes
        self.downsample = projection(in_planes, out_planes, stride) if residual and needs_projection else None
        self.stride = stride

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        if self.residual:
            out = out + (x if self.downsample is None else self.downsample(x))
        return self.relu(out)


Block = type[BasicBlock] | type[Bottleneck]


def init_weights(model: nn.Module, *, zero_init_residual: bool) -> None:
    """Kaiming-normal convolutions, unit BatchNorm, and optionally zero gamma on each block's last BN."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
    if zero_init_residual:
        for m in model.modules():
            if isinstance(m, Bottleneck) and m.residual:
                nn.init.zeros_(m.bn3.weight)
            elif isinstance(m, BasicBlock) and m.residual:
                nn.init.zeros_(m.bn2.weight)


class ResNet(nn.Module):
    """ImageNet-style ResNet: 7x7/2 stem, 3x3/2 max-pool, four stages, global average pool, fc."""

    def __init__(
        self,
        block: Block,
        layers: list[int],
        *,
        num_classes: int = 1000,
        in_channels: int = 3,
        residual: bool = True,
        zero_init_residual: bool = False,
    ) -> None:
        super().__init__()
        self.residual = residual
        self.in_planes = 64
        self.conv1 = nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = self._make_layer(block, 64, layers[0], stride=1)
        self.layer2 = self._make_layer(block, 128, layers[1], stride=2)
        self.layer3 = self._make_layer(block, 256, layers[2], stride=2)
        self.layer4 = self._make_layer(block, 512, layers[3], stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(512 * block.expansion, num_classes)
        init_weights(self, zero_init_residual=zero_init_residual)

    def _make_layer(self, block: Block, planes: int, blocks: int, stride: int) -> nn.Sequential:
        layers = []
        for i in range(blocks):
            layers.append(block(self.in_planes, planes, stride if i == 0 else 1, residual=self.residual))
            self.in_planes = planes * block.expansion
        return nn.Sequential(*layers)

    def forward_features(self, x: Tensor) -> Tensor:
        """Everything up to (not including) the global pool."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(torch.flatten(self.avgpool(self.forward_features(x)), 1))


class CifarResNet(nn.Module):
    """CIFAR-style ResNet (paper section 4.2): 3x3 stem, three stages of 16/32/64 channels, 6n+2 layers.

    Deviation from the paper: where the width changes, the shortcut is a 1x1 projection (option B)
    instead of zero-padding (option A); it adds under 1% parameters and keeps one block class.
    """

    def __init__(
        self,
        depth: int,
        *,
        num_classes: int = 10,
        in_channels: int = 3,
        residual: bool = True,
        zero_init_residual: bool = False,
    ) -> None:
        super().__init__()
        if (depth - 2) % 6 != 0:
            raise ValueError(f"CIFAR ResNet depth must be 6n+2, got {depth}")
        n = (depth - 2) // 6
        self.residual = residual
        self.in_planes = 16
        self.conv1 = conv3x3(in_channels, 16)
        self.bn1 = nn.BatchNorm2d(16)
        self.relu = nn.ReLU(inplace=True)
        self.layer1 = self._make_layer(16, n, stride=1)
        self.layer2 = self._make_layer(32, n, stride=2)
        self.layer3 = self._make_layer(64, n, stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(64, num_classes)
        init_weights(self, zero_init_residual=zero_init_residual)

    def _make_layer(self, planes: int, blocks: int, stride: int) -> nn.Sequential:
        layers = []
        for i in range(blocks):
            layers.append(BasicBlock(self.in_planes, planes, stride if i == 0 else 1, residual=self.residual))
            self.in_planes = planes
        return nn.Sequential(*layers)

    def forward_features(self, x: Tensor) -> Tensor:
        """Everything up to (not including) the global pool."""
        x = self.relu(self.bn1(self.conv1(x)))
        return self.layer3(self.layer2(self.layer1(x)))

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(torch.flatten(self.avgpool(self.forward_features(x)), 1))


def _resnet(block: Block, layers: list[int], **kwargs: Any) -> ResNet:
    return ResNet(block, layers, **kwargs)


# ImageNet-style ResNets (paper Table 1).


@register_model(family="imagenet", native_input_size=224)
def resnet18(**kwargs: Any) -> ResNet:
    """ResNet-18: BasicBlock x [2, 2, 2, 2], 11.7M parameters, 1.8 GFLOPs at 224x224."""
    return _resnet(BasicBlock, [2, 2, 2, 2], **kwargs)


@register_model(family="imagenet", native_input_size=224)
def resnet34(**kwargs: Any) -> ResNet:
    """ResNet-34: BasicBlock x [3, 4, 6, 3], 21.8M parameters, 3.6 GFLOPs at 224x224."""
    return _resnet(BasicBlock, [3, 4, 6, 3], **kwargs)


@register_model(family="imagenet", native_input_size=224)
def resnet50(**kwargs: Any) -> ResNet:
    """ResNet-50: Bottleneck x [3, 4, 6, 3], 25.6M parameters, 4.1 GFLOPs (v1.5 stride placement)."""
    return _resnet(Bottleneck, [3, 4, 6, 3], **kwargs)


@register_model(family="imagenet", native_input_size=224)
def resnet101(**kwargs: Any) -> ResNet:
    """ResNet-101: Bottleneck x [3, 4, 23, 3], 44.5M parameters."""
    return _resnet(Bottleneck, [3, 4, 23, 3], **kwargs)


@register_model(family="imagenet", native_input_size=224)
def resnet152(**kwargs: Any) -> ResNet:
    """ResNet-152: Bottleneck x [3, 8, 36, 3], 60.2M parameters."""
    return _resnet(Bottleneck, [3, 8, 36, 3], **kwargs)


# Their plain twins: identical layers, no shortcuts.


@register_model(family="imagenet", native_input_size=224, residual=False)
def plain18(**kwargs: Any) -> ResNet:
    """Plain-18: ResNet-18 without shortcuts."""
    return _resnet(BasicBlock, [2, 2, 2, 2], residual=False, **kwargs)


@register_model(family="imagenet", native_input_size=224, residual=False)
def plain34(**kwargs: Any) -> ResNet:
    """Plain-34: ResNet-34 without shortcuts (the paper's Figure 4 baseline)."""
    return _resnet(BasicBlock, [3, 4, 6, 3], residual=False, **kwargs)


@register_model(family="imagenet", native_input_size=224, residual=False)
def plain50(**kwargs: Any) -> ResNet:
    """Plain-50: ResNet-50 without shortcuts."""
    return _resnet(Bottleneck, [3, 4, 6, 3], residual=False, **kwargs)


@register_model(family="imagenet", native_input_size=224, residual=False)
def plain101(**kwargs: Any) -> ResNet:
    """Plain-101: ResNet-101 without shortcuts."""
    return _resnet(Bottleneck, [3, 4, 23, 3], residual=False, **kwargs)


@register_model(family="imagenet", native_input_size=224, residual=False)
def plain152(**kwargs: Any) -> ResNet:
    """Plain-152: ResNet-152 without shortcuts."""
    return _resnet(Bottleneck, [3, 8, 36, 3], residual=False, **kwargs)


# CIFAR-style ResNets (paper section 4.2, Table 6) and their plain twins.


def _cifar(depth: int, **kwargs: Any) -> CifarResNet:
    kwargs.setdefault("num_classes", 10)
    return CifarResNet(depth, **kwargs)


@register_model(family="cifar", native_input_size=32)
def resnet20(**kwargs: Any) -> CifarResNet:
    """ResNet-20 (n=3): 0.27M parameters."""
    return _cifar(20, **kwargs)


@register_model(family="cifar", native_input_size=32)
def resnet32(**kwargs: Any) -> CifarResNet:
    """ResNet-32 (n=5): 0.46M parameters."""
    return _cifar(32, **kwargs)


@register_model(family="cifar", native_input_size=32)
def resnet44(**kwargs: Any) -> CifarResNet:
    """ResNet-44 (n=7): 0.66M parameters."""
    return _cifar(44, **kwargs)


@register_model(family="cifar", native_input_size=32)
def resnet56(**kwargs: Any) -> CifarResNet:
    """ResNet-56 (n=9): 0.85M parameters."""
    return _cifar(56, **kwargs)


@register_model(family="cifar", native_input_size=32)
def resnet110(**kwargs: Any) -> CifarResNet:
    """ResNet-110 (n=18): 1.7M parameters."""
    return _cifar(110, **kwargs)


@register_model(family="cifar", native_input_size=32, residual=False)
def plain20(**kwargs: Any) -> CifarResNet:
    """Plain-20: ResNet-20 without shortcuts."""
    return _cifar(20, residual=False, **kwargs)


@register_model(family="cifar", native_input_size=32, residual=False)
def plain32(**kwargs: Any) -> CifarResNet:
    """Plain-32: ResNet-32 without shortcuts."""
    return _cifar(32, residual=False, **kwargs)


@register_model(family="cifar", native_input_size=32, residual=False)
def plain44(**kwargs: Any) -> CifarResNet:
    """Plain-44: ResNet-44 without shortcuts."""
    return _cifar(44, residual=False, **kwargs)


@register_model(family="cifar", native_input_size=32, residual=False)
def plain56(**kwargs: Any) -> CifarResNet:
    """Plain-56: ResNet-56 without shortcuts (the paper's Figure 1 baseline)."""
    return _cifar(56, residual=False, **kwargs)


@register_model(family="cifar", native_input_size=32, residual=False)
def plain110(**kwargs: Any) -> CifarResNet:
    """Plain-110: ResNet-110 without shortcuts."""
    return _cifar(110, residual=False, **kwargs)
