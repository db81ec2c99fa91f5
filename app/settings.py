"""Every setting of the service in one typed class; the only reader of the environment.

Each field is an environment variable (``RESNET_SERVE_MAX_BATCH_SIZE``) and, unless it is a tuning
knob (``TUNING``: measured expert settings, documented in ``app.tuning``), a ``resnet-serve`` flag
(``--max-batch-size``) generated from this class by ``app.cli``; flags override the environment,
which overrides the defaults.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Annotated, Any, Literal

import torch
from pydantic import Field, field_validator
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from app.preprocess import DEFAULT_MAX_PIXELS
from app.simulated import DEFAULT_LOCK_PATH, DEFAULT_T0_MS, DEFAULT_T1_MS
from models.device import Precision

__all__ = ["Settings", "TUNING", "available_cores"]

#: Marks a field as an environment-only tuning knob (no command-line flag).
TUNING: dict[str, Any] = {"tuning": True}


#: cgroup v2's CPU quota of this container: "max 100000" (none) or "<quota> <period>" in microseconds.
CGROUP_CPU_MAX = Path("/sys/fs/cgroup/cpu.max")


def available_cores(cpu_max: Path = CGROUP_CPU_MAX) -> int:
    """The cores this process may use: its CPU affinity, capped by a cgroup CPU quota (a container's CPU limit)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    try:
        quota, period = cpu_max.read_text().split()[:2]
    except (OSError, ValueError):
        return cores
    if quota == "max" or not quota.isdigit() or not period.isdigit() or int(period) == 0:
        return cores
    return max(1, min(cores, math.ceil(int(quota) / int(period))))


def _forward_on_cpu(device: str) -> bool:
    return device == "cpu" or (device == "auto" and not torch.cuda.is_available())


def _default_processes(device: str) -> int:
    """1 when the CPU runs the forward, else one per core up to 8 (docs/performance.md, "Processes").

    A forward on the CPU wants every core as intra-op threads of one process: on 2 cores two processes
    of one thread each served the default model 9% slower at concurrency 1, and ResNet-50's batch-1
    forward takes twice as long on one thread. With an accelerator the forward costs the host nothing,
    and one process's event loop is what caps the request rate.
    """
    return 1 if _forward_on_cpu(device) else max(1, min(8, available_cores()))


def _default_torch_threads(device: str, processes: int) -> int:
    """The CPU's cores shared among the processes when the CPU runs the forward; else 1.

    With an accelerator the host's torch work is stacking a batch: a second intra-op thread saves little
    there, and its OpenMP team spin-waits after every batch (on the simulated device it doubled the CPU
    per request of the 640x480 JPEG workload).
    """
    return max(1, available_cores() // processes) if _forward_on_cpu(device) else 1


class Settings(BaseSettings):
    """Server, model, batching, limits and ops settings of ``resnet-serve``."""

    model_config = SettingsConfigDict(env_prefix="RESNET_SERVE_", extra="ignore", protected_namespaces=())

    # Server
    host: str = Field("127.0.0.1", description="interface to bind")
    port: int = Field(8000, ge=0, le=65535, description="TCP port (0: any free port)")
    log_level: Literal["debug", "info", "warning", "error"] = Field("info", description="log level")
    log_format: Literal["json", "text"] = Field("json", description="one JSON object per log line, or plain text")
    # Models
    weights_dir: Path = Field(Path("weights"), description="directory of *.safetensors checkpoints to serve")
    default_model: str | None = Field(None, description="model used when a request names none (default: first)")
    device: str = Field(
        "auto",
        pattern=r"^(auto|cpu|cuda(:\d+)?|sim)$",
        description="auto, cpu, cuda, cuda:N, or sim (a simulated GPU for benchmarks: docs/performance.md)",
    )
    precision: Precision = Field("fp32", description="fp32, or fp16/bf16 where the device supports them")
    channels_last: bool = Field(
        True, description="channels_last memory format for the model and its inputs", json_schema_extra=TUNING
    )
    sim_t0_ms: float = Field(
        DEFAULT_T0_MS, gt=0, description="--device sim: fixed time of one forward, ms", json_schema_extra=TUNING
    )
    sim_t1_ms: float = Field(
        DEFAULT_T1_MS, ge=0, description="--device sim: time per image of one forward, ms", json_schema_extra=TUNING
    )
    sim_lock_path: Path = Field(
        DEFAULT_LOCK_PATH,
        description="--device sim: lock file; processes sharing it share one simulated device",
        json_schema_extra=TUNING,
    )
    strict: bool = Field(False, description="fail startup when any checkpoint fails to load (default: skip it)")
    # Batching
    max_batch_size: int = Field(32, ge=1, le=1024, description="upper bound of a formed batch")
    max_wait_ms: float = Field(0.0, ge=0, le=10_000, description="wait this long for a fuller batch (0: never wait)")
    autotune_batch: bool = Field(
        True, description="time each batch size at warm-up and cap batches at the best one", json_schema_extra=TUNING
    )
    max_queue: int = Field(1024, ge=1, description="queued requests per model beyond which requests get 503")
    timeout_s: float = Field(30.0, gt=0, description="per-request deadline; beyond it 504")
    # Request limits
    max_upload_mb: float = Field(10.0, gt=0, description="largest request body, in MiB (413 beyond)")
    max_image_pixels: int = Field(
        DEFAULT_MAX_PIXELS, ge=1, description="largest decoded image, width x height (400 beyond)"
    )
    max_batch_files: int = Field(64, ge=1, description="most images in one /predict/batch request")
    # Processes and threads
    processes: int = Field(
        default_factory=lambda data: _default_processes(data.get("device", "auto")),
        ge=1,
        description="server processes sharing the port, each with its own models and threads; default 1 when "
        "the CPU runs the forward, else one per core up to 8",
    )
    workers: int = Field(
        default_factory=lambda data: max(1, min(4, available_cores() // data.get("processes", 1))),
        ge=1,
        description="preprocessing threads (decode, resize) per process; default min(4, cores / processes)",
    )
    inline_decode_max_pixels: int = Field(
        4096,
        ge=0,
        description="images up to this many pixels (64x64) are decoded on the event loop, not in the pool; 0: never",
        json_schema_extra=TUNING,
    )
    malloc_keep_mb: int = Field(
        256,
        ge=0,
        description="freed memory glibc keeps for reuse instead of returning it to the OS (0: glibc's defaults)",
        json_schema_extra=TUNING,
    )
    gc_gen0_threshold: int = Field(
        20_000,
        ge=1,
        description="CPython's gen-0 garbage-collection threshold (CPython's default: 700)",
        json_schema_extra=TUNING,
    )
    torch_threads: int = Field(
        default_factory=lambda data: _default_torch_threads(data.get("device", "auto"), data.get("processes", 1)),
        ge=1,
        description="torch intra-op threads for the forward, per process; default: cores / processes on the CPU, "
        "1 when an accelerator runs the forward",
    )
    # Ops
    api_key: str | None = Field(
        None, min_length=1, description="require 'Authorization: Bearer KEY' (not on health/ready/metrics)"
    )
    cors_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="allowed CORS origins, comma-separated ('*' for any)"
    )
    drain_grace_s: float = Field(0.0, ge=0, description="after SIGTERM, answer /ready 503 this long before draining")

    @field_validator("cors_origins", mode="before")
    @classmethod
    def _split_origins(cls, value: object) -> object:
        if isinstance(value, str):
            return [origin.strip() for origin in value.split(",") if origin.strip()]
        return value

    @classmethod
    def flag_names(cls) -> list[str]:
        """The fields that have a command-line flag: all but the tuning knobs."""

        def is_tuning(field: FieldInfo) -> bool:
            return isinstance(field.json_schema_extra, dict) and bool(field.json_schema_extra.get("tuning"))

        return [name for name, field in cls.model_fields.items() if not is_tuning(field)]

    @property
    def max_upload_bytes(self) -> int:
        """``max_upload_mb`` in bytes."""
        return int(self.max_upload_mb * 1_048_576)
