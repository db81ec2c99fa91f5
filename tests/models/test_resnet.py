"""The architectures: every registered model runs, torchvision weights load identically, paper sizes."""

from __future__ import annotations

import pytest
import torch
import torchvision.models as tv

from models import architecture_info, create_model, list_models

PAPER_CIFAR_PARAMETERS_M = {"resnet20": 0.27, "resnet32": 0.46, "resnet44": 0.66, "resnet56": 0.85, "resnet110": 1.7}


def parameter_count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("name", list_models())
def test_every_registered_model_builds_and_runs_forward_and_backward(name: str) -> None:
    info = architecture_info(name)
    model = create_model(name, num_classes=7, in_channels=1)
    size = 64 if info.family == "imagenet" else info.native_input_size
    x = torch.randn(2, 1, size, size)
    logits = model(x)
    assert logits.shape == (2, 7)
    logits.sum().backward()
    assert model.conv1.weight.grad is not None and model.conv1.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("name", ["resnet18", "resnet34", "resnet50"])
def test_torchvision_state_dicts_load_strictly_and_give_identical_logits(name: str) -> None:
    torch.manual_seed(0)
    reference = getattr(tv, name)(weights=None).eval()
    ours = create_model(name).eval()
    ours.load_state_dict(reference.state_dict(), strict=True)
    assert list(ours.state_dict()) == list(reference.state_dict())
    x = torch.randn(2, 3, 96, 96)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), reference(x), rtol=0, atol=0)


@pytest.mark.parametrize("name", ["resnet101", "resnet152"])
def test_deep_imagenet_nets_have_torchvision_keys_and_shapes(name: str) -> None:
    reference = {k: v.shape for k, v in getattr(tv, name)(weights=None).state_dict().items()}
    ours = {k: v.shape for k, v in create_model(name).state_dict().items()}
    assert ours == reference


@pytest.mark.parametrize(("name", "paper_millions"), PAPER_CIFAR_PARAMETERS_M.items())
def test_cifar_resnets_match_the_papers_parameter_counts(name: str, paper_millions: float) -> None:
    # Projection shortcuts (option B) add 2.7k-3.5k parameters to the paper's option-A counts: within 2%.
    millions = parameter_count(create_model(name)) / 1e6
    assert millions == pytest.approx(paper_millions, rel=0.02)


def test_plain_twins_have_the_same_layers_minus_the_projection_shortcuts() -> None:
    residual = create_model("resnet56").state_dict()
    plain = create_model("plain56").state_dict()
    assert set(plain) < set(residual)
    assert {k for k in residual if k not in plain} == {k for k in residual if ".downsample." in k}


def test_plain_and_residual_blocks_compute_different_functions() -> None:
    torch.manual_seed(0)
    residual = create_model("resnet20").eval()
    plain = create_model("plain20").eval()
    plain.load_state_dict(residual.state_dict(), strict=False)
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        assert not torch.allclose(residual(x), plain(x))


def test_zero_init_residual_makes_every_block_start_as_identity() -> None:
    model = create_model("resnet20", zero_init_residual=True)
    assert all((block.bn2.weight == 0).all() for stage in (model.layer1, model.layer2, model.layer3) for block in stage)


def test_mnist_tutorial_net_has_the_tutorial_channel_progression() -> None:
    model = create_model("mnist_resnet")
    assert [
        model.conv1.out_channels,
        model.layer1.conv2.out_channels,
        model.layer2.conv2.out_channels,
        model.layer3.conv2.out_channels,
    ] == [20, 40, 80, 160]
    assert (model.fc.in_features, model.fc.out_features) == (160, 10)
    assert model(torch.randn(3, 1, 28, 28)).shape == (3, 10)


def test_unknown_architecture_error_lists_the_known_ones() -> None:
    with pytest.raises(KeyError, match="resnet50") as info:
        create_model("resnet51")
    assert "unknown architecture 'resnet51'" in str(info.value)


def test_list_models_filters_by_pattern() -> None:
    assert list_models("plain5*") == ["plain50", "plain56"]
    assert {"resnet18", "resnet20", "resnet110", "mnist_resnet"} <= set(list_models())
