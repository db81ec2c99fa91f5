"""Every setting of the service in one typed class; the only reader of the environment.

Each field is an environment variable (``RESNET_SERVE_MAX_BATCH_SIZE``) and, unless it is a tuning
knob (``TUNING``: measured expert settings, documented in ``app.tuning``), a ``resnet-serve`` flag
(``--max-batch-size``) generated from this class by ``app.cli``; flags override the environment,
which overrides the defaults.
"""

from __future__ import annotations

import ipaddress
import math
import os
import resource
from pathlib import Path
from typing import Annotated, Any, Literal

import torch
from pydantic import Field, field_validator, model_validator
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from app.optimize import CACHE_DIR_NAME
from app.preprocess import ALLOWED_FORMATS, DEFAULT_MAX_PIXELS, DEFAULT_MAX_PIXELS_PER_BYTE, DecodeLimits
from app.simulated import DEFAULT_LOCK_PATH, DEFAULT_T0_MS, DEFAULT_T1_MS
from app.variants import variant_names
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


#: cgroup v2's memory limit of this container: "max" (none) or bytes.
CGROUP_MEMORY_MAX = Path("/sys/fs/cgroup/memory.max")


def available_memory(memory_max: Path = CGROUP_MEMORY_MAX) -> int:
    """Bytes of memory this process may use: the host's RAM, capped by a cgroup memory limit."""
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    try:
        limit = memory_max.read_text().strip()
    except OSError:
        return total
    return min(total, int(limit)) if limit.isdigit() else total


def _default_body_budget_mb(processes: int) -> float:
    """An eighth of the memory (host or container limit) shared among the processes, in MiB."""
    return round(available_memory() / 8 / processes / 1_048_576, 1)


def _default_max_connections(processes: int) -> int:
    """Half the open-file limit shared among the processes (the rest: model files, pipes), 64 to 4096."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return 4096
    return max(64, min(4096, soft // 2 // processes))


def _forward_on_cpu(device: str) -> bool:
    return device == "cpu" or (device == "auto" and not torch.cuda.is_available())


def _is_loopback(host: str) -> bool:
    """Whether ``host`` is a loopback address or ``localhost`` (only this machine can connect)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


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
    optimize: str = Field(
        "auto",
        description="off (eager at --precision), auto (the fastest variant agreeing with fp32), or a variant's name: "
        + ", ".join(variant_names()),
    )
    min_agreement: float = Field(
        0.99, gt=0, le=1, description="--optimize: least top-1 agreement with fp32 on the golden images"
    )
    optimize_cache_dir: Path | None = Field(
        None, description=f"--optimize: cache of chosen variants (default: WEIGHTS_DIR/{CACHE_DIR_NAME})"
    )
    # Batching
    max_batch_size: int = Field(32, ge=1, le=1024, description="upper bound of a formed batch")
    max_wait_ms: float = Field(0.0, ge=0, le=10_000, description="wait this long for a fuller batch (0: never wait)")
    autotune_batch: bool = Field(
        True, description="time each batch size at warm-up and cap batches at the best one", json_schema_extra=TUNING
    )
    max_queue: int = Field(1024, ge=1, description="queued requests per model beyond which requests get 503")
    timeout_s: float = Field(30.0, gt=0, description="per-request deadline; beyond it 504")
    # Request limits (docs/security.md)
    max_upload_mb: float = Field(10.0, gt=0, description="largest request body, in MiB (413 beyond)")
    min_upload_rate_kb: float = Field(
        16.0,
        ge=0,
        description="after the first --upload-grace-s, a body must arrive at this many KiB/s at least (408 and "
        "the connection closed below it; a body must also be complete within --timeout-s); 0: no rate",
    )
    upload_grace_s: float = Field(5.0, ge=0, description="seconds a body may take before --min-upload-rate-kb applies")
    max_image_pixels: int = Field(
        DEFAULT_MAX_PIXELS, ge=1, description="largest image, width x height as its header declares (400 beyond)"
    )
    max_request_pixels: int = Field(
        120_000_000,
        ge=1,
        description="pixels the images of one request may decode to in all, after JPEG draft scaling (413 beyond)",
    )
    image_formats: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: list(ALLOWED_FORMATS),
        description=f"accepted image formats, comma-separated; default {','.join(ALLOWED_FORMATS)}",
    )
    max_pixels_per_byte: int = Field(
        DEFAULT_MAX_PIXELS_PER_BYTE,
        ge=1,
        description="declared pixels per byte of file beyond which an image (over 1 megapixel) is a decompression "
        "bomb (400)",
        json_schema_extra=TUNING,
    )
    max_batch_files: int = Field(64, ge=1, description="most images in one /predict/batch request")
    header_timeout_s: float = Field(
        10.0,
        gt=0,
        description="close a connection whose request headers are not complete this long after it opened "
        "or after its previous response",
    )
    keep_alive_s: int = Field(5, ge=1, description="close an idle keep-alive connection after this many seconds")
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
    # Per-process admission limits (after ``processes``: their defaults divide by it)
    max_body_bytes_in_flight_mb: float = Field(
        default_factory=lambda data: _default_body_budget_mb(data.get("processes", 1)),
        gt=0,
        description="request bodies held at once per process, in MiB; beyond it 503 before the body is read; "
        "default: an eighth of the memory (or the container's limit) divided among the processes",
    )
    max_connections: int = Field(
        default_factory=lambda data: _default_max_connections(data.get("processes", 1)),
        ge=1,
        description="open connections per process beyond which new requests get 503 (uvicorn's limit_concurrency); "
        "default: half the open-file limit divided among the processes, 64 to 4096",
    )
    # Ops
    api_key: str | None = Field(
        None, min_length=1, description="require 'Authorization: Bearer KEY' (not on health/ready/metrics)"
    )
    cors_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="allowed CORS origins, comma-separated ('*' for any)"
    )
    drain_grace_s: float = Field(0.0, ge=0, description="after SIGTERM, answer /ready 503 this long before draining")
    stall_timeout_s: float = Field(
        60.0,
        gt=0,
        description="/health answers 503 when a batch has been running (or waiting for the forward thread) this long, "
        "or every batch of a model has been failing this long",
    )
    max_failed_batches: int = Field(
        5, ge=1, description="/ready answers 503 after this many consecutive failed batches of a model"
    )

    # Model lifecycle
    model_control: bool = Field(
        False,
        description="enable POST /models/{name}/load|unload|reload|rollback (behind --api-key; files in "
        "--weights-dir only); needs --processes 1 (each process has its own models: use --watch-weights)",
    )
    watch_weights: bool = Field(
        False,
        description="load, hot-swap (checked) or unload a model when its file in --weights-dir appears, changes "
        "or disappears",
    )
    watch_debounce_s: float = Field(
        2.0,
        gt=0,
        le=600,
        description="--watch-weights acts on a file once its size and mtime have not changed for this long",
    )

    @model_validator(mode="after")
    def _model_control_safe(self) -> Settings:
        if self.model_control and self.processes > 1:
            raise ValueError(
                "--model-control acts on the process that receives the request: use --processes 1, or "
                "--watch-weights, which every process follows"
            )
        if self.model_control and self.api_key is None and not _is_loopback(self.host):
            raise ValueError(
                f"--model-control on {self.host} needs --api-key: anyone who reaches the port could change the "
                "models (without a key, bind a loopback address)"
            )
        return self

    @field_validator("optimize")
    @classmethod
    def _known_variant(cls, value: str) -> str:
        if value not in ("off", "auto", *variant_names()):
            raise ValueError(f"--optimize must be off, auto or one of {variant_names()}, got {value!r}")
        return value

    @field_validator("cors_origins", "image_formats", mode="before")
    @classmethod
    def _split_commas(cls, value: object) -> object:
        if isinstance(value, str):
            return [item.strip() for item in value.split(",") if item.strip()]
        return value

    @field_validator("image_formats")
    @classmethod
    def _known_formats(cls, value: list[str]) -> list[str]:
        formats = [name.upper() for name in value]
        unknown = sorted(set(formats) - set(ALLOWED_FORMATS))
        if unknown or not formats:
            raise ValueError(f"image formats must be some of {','.join(ALLOWED_FORMATS)}; got {unknown or 'none'}")
        return formats

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

    @property
    def body_budget_bytes(self) -> int:
        """``max_body_bytes_in_flight_mb`` in bytes."""
        return int(self.max_body_bytes_in_flight_mb * 1_048_576)

    @property
    def optimize_cache(self) -> Path:
        """Where ``--optimize`` keeps its cache."""
        return self.optimize_cache_dir or self.weights_dir / CACHE_DIR_NAME

    @property
    def decode_limits(self) -> DecodeLimits:
        """What one uploaded image may be (``app.preprocess``)."""
        return DecodeLimits(self.max_image_pixels, tuple(self.image_formats), self.max_pixels_per_byte)
