"""Every runtime tried for ``--optimize``, losers included, in process and in the same minutes.

    python -m bench.runtimes --workload large     # ResNet-50 at 224x224 (needs the bench group: onnxruntime)

Forward only (normalized float32 input ready), the fastest of a few runs per batch size, eager torchvision
(fp32, BN unfolded, contiguous) = 1.0x. Each runtime's top-1 agreement with fp32 on the workload
checkpoint's golden images is printed beside it. Rows: our engine fp32 (BN folded, channels_last) and
bf16; ``torch.compile`` (Inductor); ONNX Runtime fp32 and int8 (static QDQ, per channel); OpenVINO f32,
bf16 (where the CPU has it) and int8 (NNCF). Writes ``<output>.md``.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import importlib.util
import io
import os
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import torch
from torch import Tensor, nn

from app.golden import agreement, golden_inputs
from app.openvino_runtime import OpenVINOModel, convert, cpu_capabilities, quantize_int8
from bench.optimized import eager_reference
from bench.workloads import WORKLOADS, prepare_workload
from models import read_golden
from models.fuse import fold_batchnorm
from models.preprocessing import normalize

__all__ = ["main"]

Forward = Callable[[Tensor], Tensor]


def _best_s(forward: Forward, x: Tensor, runs: int) -> float:
    forward(x)
    best = float("inf")
    for _ in range(runs):
        start = time.perf_counter()
        forward(x)
        best = min(best, time.perf_counter() - start)
    return best


def _onnx(model: nn.Module, shape: tuple[int, ...], calibration: list[Tensor], int8: bool, directory: Path) -> Forward:
    import onnxruntime as ort
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    path = directory / "model.onnx"
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model, (torch.zeros(2, *shape),), str(path), dynamic_shapes={"x": {0: torch.export.Dim("b")}}, dynamo=True
        )
    if int8:

        class Reader(CalibrationDataReader):
            def __init__(self) -> None:
                self.items = iter([{"x": c.numpy()} for c in calibration])

            def get_next(self) -> dict | None:
                return next(self.items, None)

        quant_pre_process(str(path), str(directory / "pre.onnx"))
        quantize_static(
            str(directory / "pre.onnx"),
            str(directory / "int8.onnx"),
            Reader(),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
        )
        path = directory / "int8.onnx"
    options = ort.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return lambda x: torch.from_numpy(session.run(None, {name: x.contiguous().numpy()})[0])


def main(argv: list[str] | None = None) -> int:
    """Measure and print the table; write it under bench/results/."""
    p = argparse.ArgumentParser(prog="python -m bench.runtimes", description=__doc__.splitlines()[0])
    p.add_argument("--workload", choices=WORKLOADS, default="large")
    p.add_argument("--batch-sizes", type=lambda t: [int(x) for x in t.split(",")], default=[1, 8])
    p.add_argument("--runs", type=int, default=4)
    p.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    p.add_argument("--work-dir", type=Path, default=Path("/tmp/resnet-serve-bench"))
    p.add_argument("--output", type=Path, default=None)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    workload = prepare_workload(args.workload, args.work_dir)
    reference = eager_reference(workload.checkpoint)
    spec = reference.metadata.preprocessing
    golden = read_golden(workload.checkpoint)
    assert golden is not None, "the bench workloads carry golden images"
    inputs = normalize(golden_inputs(golden.images, spec), spec, torch.float32)
    calibration = [x.unsqueeze(0) for x in inputs]
    shape = reference.input_shape
    eager: nn.Module = reference.model  # type: ignore[assignment]
    folded = fold_batchnorm(copy.deepcopy(eager)).to(memory_format=torch.channels_last)
    builders: dict[str, Callable[[Path], Forward]] = {
        "eager torchvision fp32 (1.0x)": lambda _: eager,
        "ours: eager fp32, BN folded, channels_last": lambda _: (
            lambda x: folded(x.to(memory_format=torch.channels_last))
        ),
        "ours: eager bf16": lambda _: _bf16(folded),
        "torch.compile (Inductor) fp32": lambda _: _compiled(folded),
        "OpenVINO f32": lambda _: OpenVINOModel(convert(folded, shape)),
        "OpenVINO int8 (NNCF)": lambda _: OpenVINOModel(quantize_int8(convert(folded, shape), calibration)),
    }
    if "BF16" in cpu_capabilities():
        builders["OpenVINO bf16"] = lambda _: OpenVINOModel(convert(folded, shape), precision="bf16")
    if importlib.util.find_spec("onnxruntime") is not None:
        builders["ONNX Runtime fp32"] = lambda d: _onnx(folded, shape, calibration, False, d)
        builders["ONNX Runtime int8 (static QDQ)"] = lambda d: _onnx(folded, shape, calibration, True, d)
    rows = []
    base: dict[int, float] = {}
    for name, build in builders.items():
        with tempfile.TemporaryDirectory() as directory, torch.inference_mode():
            started = time.perf_counter()
            forward = build(Path(directory))
            probs = torch.cat([torch.softmax(forward(chunk).float(), 1) for chunk in inputs.split(16)])
            build_s = time.perf_counter() - started
            times = {
                b: _best_s(forward, inputs[:1].expand(b, *shape).contiguous(), args.runs) for b in args.batch_sizes
            }
        base = base or times
        agree = agreement(golden.probs, probs)
        cells = [f"{b / t:.1f} ({base[b] / t:.2f}x)" for b, t in times.items()]
        rows.append(f"| {name} | {' | '.join(cells)} | {agree.top1:.2%} | {agree.max_prob_diff:.4f} | {build_s:.1f} |")
        print(rows[-1], flush=True)
    head = " | ".join(f"img/s b={b} (x eager)" for b in args.batch_sizes)
    table = "\n".join(
        [
            f"| runtime | {head} | top-1 agreement | max abs prob diff | build s |",
            "| --- | " + " | ".join("---" for _ in args.batch_sizes) + " | --- | --- | --- |",
            *rows,
        ]
    )
    output = args.output or Path("bench/results") / f"{time.strftime('%Y-%m-%d')}-runtimes-{args.workload}"
    output.parent.mkdir(parents=True, exist_ok=True)
    command = " ".join(["python -m bench.runtimes", *(sys.argv[1:] if argv is None else argv)])
    output.with_suffix(".md").write_text(
        f"# Runtimes tried for --optimize: {workload.note}\n\n`{command}`, {time.strftime('%Y-%m-%d %H:%M')}, "
        f"{args.threads} threads, forward only, {len(golden)} golden images.\n\n{table}\n"
    )
    print(table)
    return 0


def _channels_last(model: nn.Module) -> Forward:
    return lambda x: model(x.to(memory_format=torch.channels_last))


def _bf16(model: nn.Module) -> Forward:
    half = copy.deepcopy(model).to(torch.bfloat16)
    return lambda x: half(x.to(torch.bfloat16, memory_format=torch.channels_last))


def _compiled(model: nn.Module) -> Forward:
    compiled = torch.compile(model)
    return lambda x: compiled(x.to(memory_format=torch.channels_last))


if __name__ == "__main__":
    raise SystemExit(main())
