"""The one device and precision resolver shared by training, evaluation and serving."""

from __future__ import annotations

import pytest
import torch

from models.device import DTYPES, PRECISIONS, precision_name, resolve_device, resolve_precision

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
without_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="checks the behaviour of a machine without CUDA")


def test_cpu_is_always_available() -> None:
    assert resolve_device("cpu") == torch.device("cpu")


@without_cuda
def test_auto_is_the_cpu_without_cuda() -> None:
    assert resolve_device("auto") == torch.device("cpu")
    assert resolve_device() == torch.device("cpu")


@needs_cuda
def test_auto_is_cuda_when_available() -> None:
    assert resolve_device("auto") == torch.device("cuda")


def test_auto_prefers_cuda_when_torch_reports_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto") == torch.device("cuda")


@pytest.mark.parametrize("name", ["gpu", "tpu", "mps", "cuda:x", "", "CPU0"])
def test_malformed_or_unsupported_names_are_one_line_value_errors(name: str) -> None:
    with pytest.raises(ValueError, match=r"is not one of auto, cpu, cuda, cuda:N") as error:
        resolve_device(name)
    assert "\n" not in str(error.value)


@without_cuda
@pytest.mark.parametrize("name", ["cuda", "cuda:0"])
def test_cuda_without_cuda_is_a_value_error(name: str) -> None:
    with pytest.raises(ValueError, match=rf"device '{name}' requested but CUDA is not available"):
        resolve_device(name)


@needs_cuda
def test_cuda_devices_that_exist_resolve() -> None:
    assert resolve_device("cuda") == torch.device("cuda")
    assert resolve_device("cuda:0") == torch.device("cuda", 0)


@needs_cuda
def test_a_cuda_index_past_the_last_device_is_a_value_error() -> None:
    count = torch.cuda.device_count()
    with pytest.raises(ValueError, match=rf"does not exist \({count} CUDA devices\)"):
        resolve_device(f"cuda:{count}")


def test_a_cuda_index_is_checked_against_the_device_count(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert resolve_device("cuda:1") == torch.device("cuda", 1)
    with pytest.raises(ValueError, match=r"device 'cuda:2' does not exist \(2 CUDA devices\)"):
        resolve_device("cuda:2")


@pytest.mark.parametrize("precision", PRECISIONS)
def test_every_precision_resolves_on_the_cpu_and_names_back(precision: str) -> None:
    dtype = resolve_precision(precision, torch.device("cpu"))
    assert dtype is DTYPES[precision]
    assert precision_name(dtype) == precision


def test_precisions_are_fp32_fp16_bf16_each_with_its_dtype() -> None:
    assert PRECISIONS == ("fp32", "fp16", "bf16") == tuple(DTYPES)
    assert [DTYPES[name] for name in PRECISIONS] == [torch.float32, torch.float16, torch.bfloat16]


@pytest.mark.parametrize("precision", ["int8", "float32", "FP16", ""])
def test_an_unknown_precision_is_a_value_error(precision: str) -> None:
    with pytest.raises(ValueError, match=r"precision must be one of \['fp32', 'fp16', 'bf16'\]"):
        resolve_precision(precision, torch.device("cpu"))


def test_bf16_on_a_gpu_without_it_is_a_value_error_naming_the_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: False)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Tesla T4")
    with pytest.raises(ValueError, match="bf16 is not supported on Tesla T4"):
        resolve_precision("bf16", torch.device("cuda"))
    assert resolve_precision("fp16", torch.device("cuda")) is torch.float16


@needs_cuda
def test_precisions_the_gpu_supports_resolve() -> None:
    device = resolve_device("cuda")
    assert resolve_precision("fp16", device) is torch.float16
    assert resolve_precision("fp32", device) is torch.float32


def test_a_dtype_without_a_precision_name_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="torch.int8 is not an inference precision"):
        precision_name(torch.int8)
