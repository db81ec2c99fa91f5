"""A simulated accelerator (``--device sim``): the GPU case, measured on a machine without a GPU.

A forward of ``b`` images takes the wall time a real accelerator takes, ``t(b) = t0 + b * t1``
(defaults: ResNet-50 v1.5 at fp16 under TensorRT on one A100 80GB, NVIDIA's published table; see
``DEFAULT_T0_MS``), while the calling thread
sleeps: the GIL is released and no CPU is used, as when a thread waits on a CUDA stream. One device
serves every process on the host: a forward holds an exclusive ``flock`` on a lock file for its
duration, so the batches of several front-end processes queue for the device as kernels from
several processes queue on one GPU.

Everything on the host side stays real: decoding, resizing, stacking into a batch, the top-k and the
JSON. Only the device's work (normalization, the network, the softmax) is replaced by the wait; the
probabilities it "returns" are uniform.
"""

from __future__ import annotations

import fcntl
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor

from app.engine import Engine
from models import read_metadata

__all__ = ["DEFAULT_LOCK_PATH", "DEFAULT_T0_MS", "DEFAULT_T1_MS", "SimulatedDevice", "SimulatedEngine"]

#: Fixed cost of one forward and cost per image, in ms: a least-squares fit (within 3% from batch 1 to 256)
#: to NVIDIA's "FP16 Inference Latency" table for ResNet-50 v1.5 under Paddle-TRT on a DGX A100
#: (1x A100 80GB): NVIDIA/DeepLearningExamples, PaddlePaddle/Classification/RN50v1.5/README.md, commit
#: 38934f9f. Ceiling: 12,978 img/s at batch 32, 15,149 at 64. docs/performance.md has the table and an
#: H100 estimate (``RESNET_SERVE_SIM_T1_MS=0.0254``).
DEFAULT_T0_MS = 0.71
DEFAULT_T1_MS = 0.055
#: Every process using this path shares one simulated device.
DEFAULT_LOCK_PATH = Path("/tmp/resnet-serve-sim-device.lock")


@dataclass
class SimulatedDevice:
    """One simulated accelerator: its timing model and the lock file that makes it one device per host."""

    t0_s: float = DEFAULT_T0_MS / 1000
    t1_s: float = DEFAULT_T1_MS / 1000
    lock_path: Path = DEFAULT_LOCK_PATH
    _fd: int | None = field(default=None, init=False, repr=False)
    _threads: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    def __str__(self) -> str:
        return "sim"

    def forward_s(self, batch_size: int) -> float:
        """Wall time of one forward of ``batch_size`` images: ``t0 + batch_size * t1``."""
        return self.t0_s + batch_size * self.t1_s

    def images_per_s(self, batch_size: int) -> float:
        """The device's throughput at ``batch_size``: its ceiling when every batch is that full."""
        return batch_size / self.forward_s(batch_size)

    def run(self, batch_size: int) -> None:
        """Occupy the device for one forward: wait for it (other threads and processes), then sleep ``t(b)``."""
        with self._threads:  # flock excludes other open files, not other threads sharing this one
            fd = self._lock_fd()
            fcntl.flock(fd, fcntl.LOCK_EX)  # blocks without the GIL, like a wait on a busy GPU
            try:
                time.sleep(self.forward_s(batch_size))
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)

    def _lock_fd(self) -> int:
        if self._fd is None:
            self._fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o666)
        return self._fd


@dataclass
class SimulatedEngine(Engine):
    """An ``Engine`` whose forward runs on a ``SimulatedDevice``: host work real, device work a timed wait."""

    sim: SimulatedDevice = field(default_factory=SimulatedDevice)

    @classmethod
    def load_simulated(cls, path: Path, sim: SimulatedDevice, *, precision: str = "fp16") -> SimulatedEngine:
        """The checkpoint's metadata (labels, preprocessing) on the simulated device; no weights are read."""
        if precision != "fp16":
            raise ValueError(f"the simulated device models fp16 timings; use --precision fp16, not {precision}")
        metadata = read_metadata(path)
        return cls(path.stem, torch.nn.Identity(), metadata, torch.device("cpu"), torch.float16, False, path, sim=sim)

    @property
    def device_name(self) -> str:
        """``sim``: what logs, metrics and ``/models`` report as the device."""
        return "sim"

    @torch.inference_mode()
    def predict(self, images: list[Tensor] | Tensor) -> Tensor:
        """Stack the batch on the host (as for a GPU), hold the device for ``t(b)``, return uniform probabilities."""
        batch = torch.stack(images) if isinstance(images, list) else images
        size = batch.shape[0]
        self.sim.run(size)
        classes = self.metadata.architecture.num_classes
        return torch.full((size, classes), 1.0 / classes)
