"""ONNX Runtime as a model runtime: export a PyTorch model to ONNX, quantize it to int8, run it.

Imported only when ``--optimize`` tries an ONNX Runtime variant. The exported model takes the normalized
float32 NCHW batch the eager model takes (any batch size) and returns logits. Int8 is ONNX Runtime's
static quantization (QDQ, per-channel int8 weights, uint8 activations), calibrated on the checkpoint's
golden images. The artifact is the ``.onnx`` file itself.
"""

from __future__ import annotations

import contextlib
import copy
import io
import shutil
import tempfile
import warnings
from collections.abc import Sequence
from pathlib import Path

import onnxruntime as ort
import torch
from torch import Tensor, nn

__all__ = ["OnnxModel", "export", "quantize_int8"]


def export(model: nn.Module, input_shape: tuple[int, int, int], path: Path) -> Path:
    """Write the eager model (fp32) to ``path`` as ONNX with a dynamic batch dimension; returns ``path``."""
    model = copy.deepcopy(model).to(memory_format=torch.contiguous_format)
    example = (torch.zeros((2, *input_shape)),)  # 2, not 1: a batch of 1 would be specialised as a constant
    batch = {0: torch.export.Dim("batch")}
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):  # the exporter's progress lines
        warnings.simplefilter("ignore")
        torch.onnx.export(model, example, str(path), dynamic_shapes=(batch,), dynamo=True, external_data=False)
    return path


def quantize_int8(source: Path, target: Path, calibration: Sequence[Tensor]) -> Path:
    """Static int8 quantization of the ONNX model at ``source`` into ``target``, calibrated on (1, C, H, W) inputs."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    name = ort.InferenceSession(str(source), providers=["CPUExecutionProvider"]).get_inputs()[0].name

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.items = iter([{name: image.numpy()} for image in calibration])

        def get_next(self) -> dict | None:
            return next(self.items, None)

    prepared = target.with_suffix(".pre.onnx")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        quant_pre_process(str(source), str(prepared))
        quantize_static(
            str(prepared),
            str(target),
            Reader(),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
        )
    prepared.unlink(missing_ok=True)
    return target


class OnnxModel:
    """An ONNX Runtime session behind the eager model's interface: normalized batch -> logits."""

    def __init__(self, path: Path, *, threads: int | None = None) -> None:
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or torch.get_num_threads()
        self.model_bytes = path.read_bytes()  # kept: ``save`` writes it to the cache after a temporary dir is gone
        self._session = ort.InferenceSession(self.model_bytes, options, providers=["CPUExecutionProvider"])
        self._input = self._session.get_inputs()[0].name

    @classmethod
    def build(
        cls, model: nn.Module, input_shape: tuple[int, int, int], calibration: Sequence[Tensor] | None, threads: int
    ) -> OnnxModel:
        """Export (and with ``calibration``, quantize to int8) ``model`` in a temporary directory, then load it."""
        directory = Path(tempfile.mkdtemp(prefix="resnet-serve-onnx-"))
        try:
            path = export(model, input_shape, directory / "model.onnx")
            if calibration is not None:
                path = quantize_int8(path, directory / "int8.onnx", calibration)
            return cls(path, threads=threads)
        finally:
            shutil.rmtree(directory, ignore_errors=True)

    def save(self, path: Path) -> None:
        """Write the ONNX model to ``path``."""
        path.write_bytes(self.model_bytes)

    def __call__(self, x: Tensor) -> Tensor:
        """Normalized float32 (N, C, H, W) -> logits (N, classes)."""
        (logits,) = self._session.run(None, {self._input: x.contiguous().numpy()})
        return torch.from_numpy(logits)
