"""The ways one model can run: eager PyTorch at a precision, OpenVINO (f32, bf16, int8), ONNX Runtime (fp32, int8).

A variant turns the loaded fp32 eager model (BN folded, channels_last) into a ``Runnable``: a forward
(normalized batch -> logits) with the input dtype and memory format it wants, and the precision it
computes in. ``--optimize`` (``app.optimize``) builds the variants a host supports, keeps those whose
answers agree with fp32 and serves the fastest. Variants a host cannot run say why (``unavailable``).

Which variants exist was decided by measurement (docs/performance.md, "Optimised variants"):
``torch.compile`` was tried too and lost to both runtimes; which runtime wins depends on the model and the CPU,
so both are offered and timed.
"""

from __future__ import annotations

import copy
import importlib.util
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

__all__ = ["EAGER", "VARIANTS", "Runnable", "Variant", "variant_names", "variants_for"]

EAGER = "eager"


@dataclass
class Runnable:
    """A built variant: what the engine calls, and how to feed it."""

    forward: Callable[[Tensor], Tensor]  # normalized (N, C, H, W) batch -> logits
    dtype: torch.dtype  # the input's dtype
    channels_last: bool  # the input's memory format
    precision: str  # what it computes in: fp32, bf16, fp16, int8
    artifact: Any = None  # what ``save`` writes to the cache (an ``OpenVINOModel``), if anything


@dataclass(frozen=True)
class BuildInputs:
    """What building a variant may need beside the model."""

    device: torch.device
    input_shape: tuple[int, int, int]
    calibration: Sequence[Tensor]  # normalized float32 (1, C, H, W) images: the golden set
    threads: int  # intra-op threads of the forward


def cpu_has_native_bf16(cpuinfo: Path = Path("/proc/cpuinfo")) -> bool:
    """Whether the CPU computes bf16 natively (AVX512-BF16 or AMX); unknown platforms are assumed to."""
    try:
        flags = cpuinfo.read_text()
    except OSError:
        return True
    return any(flag in flags.split() for flag in ("avx512_bf16", "amx_bf16"))


class Variant:
    """A named way to run a model; subclasses build it and say where it cannot run."""

    name: str
    precision: str

    def unavailable(self, device: torch.device) -> str | None:
        """Why this host cannot run the variant, or ``None`` when it can."""
        raise NotImplementedError

    def build(self, model: nn.Module, inputs: BuildInputs) -> Runnable:
        """The variant of the fp32 eager ``model`` (which it must not change)."""
        raise NotImplementedError

    def load(self, model: nn.Module, inputs: BuildInputs, artifact: Path) -> Runnable:
        """The variant from an artifact a previous ``save`` wrote (eager variants rebuild: it is instant)."""
        return self.build(model, inputs)

    def save(self, runnable: Runnable, artifact: Path) -> bool:
        """Write what ``load`` needs to ``artifact``; ``False`` when there is nothing to write."""
        return False


@dataclass(frozen=True)
class EagerVariant(Variant):
    """The eager PyTorch model (BN folded, channels_last) in ``dtype``."""

    name: str
    precision: str
    dtype: torch.dtype
    devices: tuple[str, ...] = ("cpu", "cuda")

    def unavailable(self, device: torch.device) -> str | None:
        if device.type not in self.devices:
            return f"{self.precision} eager runs on {', '.join(self.devices)} only"
        if self.dtype is torch.bfloat16 and device.type == "cuda" and not torch.cuda.is_bf16_supported():
            return "this GPU has no bf16"
        if self.dtype is torch.bfloat16 and device.type == "cpu" and not cpu_has_native_bf16():
            return "this CPU has no bf16 instructions (AVX512-BF16 or AMX): emulated bf16 is several times slower"
        return None

    def build(self, model: nn.Module, inputs: BuildInputs) -> Runnable:
        variant = model if self.dtype is torch.float32 else copy.deepcopy(model).to(dtype=self.dtype)
        return Runnable(variant, self.dtype, True, self.precision)


@dataclass(frozen=True)
class OpenVINOVariant(Variant):
    """The model converted to OpenVINO, computing in ``hint`` (f32, bf16), or quantized to int8."""

    name: str
    precision: str
    hint: str = "f32"
    int8: bool = False

    def unavailable(self, device: torch.device) -> str | None:
        if device.type != "cpu":
            return "OpenVINO variants run on the CPU"
        if importlib.util.find_spec("openvino") is None:
            return "openvino is not installed"
        if self.int8 and importlib.util.find_spec("nncf") is None:
            return "nncf (OpenVINO's quantizer) is not installed"
        from app.openvino_runtime import cpu_capabilities

        needed = "INT8" if self.int8 else {"f32": "FP32"}.get(self.hint, self.hint.upper())
        if needed not in cpu_capabilities():
            return f"this CPU has no {needed} support in OpenVINO ({', '.join(sorted(cpu_capabilities()))})"
        return None

    def build(self, model: nn.Module, inputs: BuildInputs) -> Runnable:
        from app.openvino_runtime import OpenVINOModel, convert, quantize_int8

        converted = convert(model, inputs.input_shape)
        if self.int8:
            converted = quantize_int8(converted, inputs.calibration)
        return self._runnable(OpenVINOModel(converted, precision=self.hint, threads=inputs.threads))

    def load(self, model: nn.Module, inputs: BuildInputs, artifact: Path) -> Runnable:
        from app.openvino_runtime import OpenVINOModel

        return self._runnable(
            OpenVINOModel.read(artifact.with_suffix(".xml"), precision=self.hint, threads=inputs.threads)
        )

    def save(self, runnable: Runnable, artifact: Path) -> bool:
        runnable.artifact.save(artifact.with_suffix(".xml"))
        return True

    def _runnable(self, compiled: Any) -> Runnable:
        return Runnable(compiled, torch.float32, False, self.precision, artifact=compiled)


@dataclass(frozen=True)
class OnnxRuntimeVariant(Variant):
    """The model exported to ONNX and run by ONNX Runtime's CPU provider, in fp32 or statically quantized to int8."""

    name: str
    precision: str
    int8: bool = False

    def unavailable(self, device: torch.device) -> str | None:
        if device.type != "cpu":
            return "ONNX Runtime variants run on the CPU"
        missing = [m for m in ("onnxruntime", "onnx", "onnxscript") if importlib.util.find_spec(m) is None]
        return f"not installed: {', '.join(missing)}" if missing else None

    def build(self, model: nn.Module, inputs: BuildInputs) -> Runnable:
        from app.onnx_runtime import OnnxModel

        calibration = inputs.calibration if self.int8 else None
        return self._runnable(OnnxModel.build(model, inputs.input_shape, calibration, inputs.threads))

    def load(self, model: nn.Module, inputs: BuildInputs, artifact: Path) -> Runnable:
        from app.onnx_runtime import OnnxModel

        return self._runnable(OnnxModel(artifact.with_suffix(".onnx"), threads=inputs.threads))

    def save(self, runnable: Runnable, artifact: Path) -> bool:
        runnable.artifact.save(artifact.with_suffix(".onnx"))
        return True

    def _runnable(self, session: Any) -> Runnable:
        return Runnable(session, torch.float32, False, self.precision, artifact=session)


VARIANTS: tuple[Variant, ...] = (
    EagerVariant(EAGER, "fp32", torch.float32),
    EagerVariant("eager-bf16", "bf16", torch.bfloat16),
    EagerVariant("eager-fp16", "fp16", torch.float16, devices=("cuda",)),
    OpenVINOVariant("openvino", "fp32"),
    OpenVINOVariant("openvino-bf16", "bf16", hint="bf16"),
    OpenVINOVariant("openvino-int8", "int8", int8=True),
    OnnxRuntimeVariant("onnxruntime", "fp32"),
    OnnxRuntimeVariant("onnxruntime-int8", "int8", int8=True),
)


def variant_names() -> list[str]:
    """Every variant's name (what ``--optimize NAME`` accepts)."""
    return [variant.name for variant in VARIANTS]


def variants_for(mode: str) -> list[Variant]:
    """The variants ``--optimize mode`` tries: all for ``auto``; eager (the reference) and the named one."""
    if mode == "auto":
        return list(VARIANTS)
    return [variant for variant in VARIANTS if variant.name in (EAGER, mode)]
