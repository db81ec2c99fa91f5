"""Name -> constructor table for every architecture, in the style of timm.

`@register_model` fills the table; `create_model` and `list_models` are the whole public surface.
The training CLI, the service, the benchmark and the tests all find models through it.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

__all__ = ["ArchitectureInfo", "architecture_info", "create_model", "list_models", "register_model"]


@dataclass(frozen=True)
class ArchitectureInfo:
    """What a caller needs to know about an architecture before building it."""

    name: str
    family: str  # "imagenet", "cifar" or "mnist"
    residual: bool
    native_input_size: int  # the input size the paper (or tutorial) used
    builder: Callable[..., nn.Module]


_REGISTRY: dict[str, ArchitectureInfo] = {}


def register_model(
    *, family: str, native_input_size: int, residual: bool = True
) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Decorator that adds a builder to the registry under the builder's function name."""

    def decorator(builder: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        name = builder.__name__
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} is registered twice")
        _REGISTRY[name] = ArchitectureInfo(name, family, residual, native_input_size, builder)
        return builder

    return decorator


def list_models(pattern: str = "*") -> list[str]:
    """Registered architecture names matching a shell-style pattern (e.g. ``"resnet*"``), sorted."""
    return sorted(name for name in _REGISTRY if fnmatch.fnmatchcase(name, pattern))


def architecture_info(name: str) -> ArchitectureInfo:
    """Registry entry for ``name``; raises ``KeyError`` listing the known names if it is unknown."""
    try:
        return _REGISTRY[name]
    except KeyError:
        known = ", ".join(list_models())
        raise KeyError(f"unknown architecture {name!r}; known architectures: {known}") from None


def create_model(
    name: str, *, num_classes: int | None = None, in_channels: int | None = None, **kwargs: object
) -> nn.Module:
    """Build a registered architecture with fresh (randomly initialised) weights.

    ``num_classes`` and ``in_channels`` default to the architecture's own (1000 and 3 for ImageNet
    nets, 10 and 3 for CIFAR nets, 10 and 1 for the MNIST net).
    """
    if num_classes is not None:
        kwargs["num_classes"] = num_classes
    if in_channels is not None:
        kwargs["in_channels"] = in_channels
    return architecture_info(name).builder(**kwargs)
