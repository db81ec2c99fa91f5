"""models.fuse.fold_batchnorm: same outputs, no BatchNorm left, eval mode required."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from models import create_model
from models.fuse import fold_batchnorm


def with_random_bn_statistics(model: nn.Module) -> nn.Module:
    """Non-trivial running stats and affine parameters, so a wrong fold cannot pass."""
    generator = torch.Generator().manual_seed(0)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            n = module.num_features
            module.running_mean.copy_(torch.rand(n, generator=generator) * 2 - 1)
            module.running_var.copy_(torch.rand(n, generator=generator) + 0.5)
            module.weight.data.copy_(torch.rand(n, generator=generator) + 0.5)
            module.bias.data.copy_(torch.rand(n, generator=generator) - 0.5)
    return model.eval()


@pytest.mark.parametrize("name", ["resnet18", "resnet50", "resnet20", "plain20", "mnist_resnet"])
def test_folding_keeps_the_outputs_and_removes_every_batchnorm(name: str) -> None:
    model = with_random_bn_statistics(create_model(name, num_classes=10))
    x = torch.randn(2, model.conv1.in_channels, 32, 32)
    with torch.inference_mode():
        expected = model(x)
        folded = fold_batchnorm(model)
        actual = folded(x)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    assert all(m.bias is not None for m in folded.modules() if isinstance(m, nn.Conv2d))
    torch.testing.assert_close(actual, expected, rtol=1e-4, atol=1e-4 * float(expected.abs().max()))


def test_folding_refuses_a_model_in_training_mode() -> None:
    with pytest.raises(ValueError, match="eval mode"):
        fold_batchnorm(create_model("resnet20", num_classes=10).train())
