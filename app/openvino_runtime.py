"""OpenVINO as a model runtime: convert a PyTorch model, quantize it to int8, save, load and run it.

Imported only when ``--optimize`` tries an OpenVINO variant. The converted model takes the normalized
float32 NCHW batch the eager model takes (any batch size) and returns logits, so the engine's
preprocessing and postprocessing are the same for every variant. Int8 uses NNCF's post-training
quantization, calibrated on the checkpoint's golden images.
"""

from __future__ import annotations

import contextlib
import copy
import io
import logging
import threading
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import openvino as ov
import torch
from torch import Tensor, nn

__all__ = ["OpenVINOModel", "cpu_capabilities", "convert", "quantize_int8", "versions"]

log = logging.getLogger("app.openvino")

_CORE = ov.Core()


def versions() -> dict[str, str]:
    """The versions an OpenVINO artifact depends on (part of the optimisation cache key)."""
    return {"openvino": ov.get_version()}


def cpu_capabilities() -> set[str]:
    """What OpenVINO's CPU plugin can compute in on this host: ``FP32``, ``INT8``, ``BF16``, ``FP16``."""
    return set(_CORE.get_property("CPU", "OPTIMIZATION_CAPABILITIES"))


def convert(model: nn.Module, input_shape: tuple[int, int, int]) -> ov.Model:
    """The eager model (fp32, contiguous weights) as an OpenVINO model with a dynamic batch dimension."""
    example = torch.zeros((1, *input_shape))
    model = copy.deepcopy(model).to(memory_format=torch.contiguous_format)  # the eager model stays as it is
    with warnings.catch_warnings():  # tracing's TracerWarnings: advice for dynamic models, not errors here
        warnings.simplefilter("ignore")
        return ov.convert_model(model, example_input=example, input=[-1, *input_shape])


def quantize_int8(model: ov.Model, calibration: Sequence[Tensor]) -> ov.Model:
    """NNCF post-training int8 quantization, calibrated on normalized float32 (1, C, H, W) inputs."""
    import nncf  # 10 s to import: only when quantizing

    nncf.set_log_level(logging.ERROR)
    dataset = nncf.Dataset([batch.numpy() for batch in calibration])
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():  # NNCF's progress bars, advice
        warnings.simplefilter("ignore")
        return nncf.quantize(model, dataset, subset_size=len(calibration))


class OpenVINOModel:
    """A compiled OpenVINO model behind the eager model's interface: normalized batch -> logits."""

    def __init__(self, model: ov.Model, *, precision: str = "f32", threads: int | None = None) -> None:
        self.source = model
        config: dict[str, Any] = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": precision}
        config["INFERENCE_NUM_THREADS"] = threads or torch.get_num_threads()
        self._compiled = _CORE.compile_model(model, "CPU", config)
        self._request = self._compiled.create_infer_request()
        self._lock = threading.Lock()  # an infer request runs one inference at a time

    @classmethod
    def read(cls, path: Path, *, precision: str = "f32", threads: int | None = None) -> OpenVINOModel:
        """Load a model saved by ``save`` (``path``: the ``.xml``; its ``.bin`` beside it)."""
        return cls(_CORE.read_model(str(path)), precision=precision, threads=threads)

    def save(self, path: Path) -> None:
        """Write the model as OpenVINO IR: ``path`` (``.xml``) and the weights beside it (``.bin``)."""
        ov.save_model(self.source, str(path), compress_to_fp16=False)

    def __call__(self, x: Tensor) -> Tensor:
        """Normalized float32 (N, C, H, W) -> logits (N, classes), a tensor of its own."""
        array = x.contiguous().numpy()
        with self._lock:
            result = self._request.infer({0: array})
            return torch.from_numpy(result[0].copy())
