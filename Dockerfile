# One image for serving and training.
#   docker build -t resnet-serve .
#   docker run --gpus all -p 8000:8000 -e RESNET_SERVE_API_KEY=... resnet-serve      # serves weights/
#   docker run --gpus all --user 10002:10002 -v weights:/app/weights resnet-serve resnet-train --arch resnet20 ...
#
# Users: the server runs as uid 10001, which can read but not change the code or the weights: root owns
# the environment and the shipped checkpoints, and uid 10002 (training) owns the weights directory, so
# only a training run (`--user 10002:10002`) adds checkpoints to it.
#
# The base matches the CUDA of the locked torch wheel (torch 2.13.0 -> CUDA 13.0; a test checks it
# against uv.lock). The `base` flavour is enough: torch's wheels bring the CUDA 13.0 runtime, cuBLAS,
# cuDNN and NCCL as nvidia-* packages, so a `runtime`/`cudnn-runtime` base would ship them twice. The
# base image still sets NVIDIA_REQUIRE_CUDA, so the container toolkit refuses a driver too old for 13.0.
ARG CUDA_IMAGE=nvidia/cuda:13.0.2-base-ubuntu24.04

# --- build: resolve the locked environment into /app/.venv with uv ----------------------------
FROM ${CUDA_IMAGE} AS build
ARG UV_VERSION=0.13.9
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv \
    && rm -rf /var/lib/apt/lists/* \
    && python3 -m venv /opt/uv \
    && /opt/uv/bin/pip install --no-cache-dir "uv==${UV_VERSION}"
# uv's cache is a build cache mount; a build that has a synced cache at hand (CI: the host's, for the same
# uv.lock) mounts it and points uv to it, and downloads nothing:
#   podman build --volume "$(uv cache dir)":/uv-cache --build-arg UV_CACHE_DIR=/uv-cache ...
ARG UV_CACHE_DIR=/root/.cache/uv
ENV UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON=/usr/bin/python3 \
    UV_PYTHON_DOWNLOADS=never
WORKDIR /app
# Dependencies first: this layer is reused until uv.lock changes. The packages' own test suites and
# static libraries (triton's CUPTI, CUDA's) are never used at run time: 0.2 GB less in the image.
COPY pyproject.toml uv.lock ./
RUN --mount=type=cache,target=/root/.cache/uv \
    /opt/uv/bin/uv sync --locked --no-dev --no-install-project \
    && find .venv \( -type d -name tests -o -type f -name '*.a' \) -prune -exec rm -rf {} +
# The README is the package's long description: an edit to it rebuilds from here, not the dependencies.
COPY README.md ./
COPY models/ models/
COPY training/ training/
COPY app/ app/
COPY experiments/ experiments/
COPY bench/ bench/
COPY client/ client/
RUN --mount=type=cache,target=/root/.cache/uv \
    /opt/uv/bin/uv sync --locked --no-dev --no-editable
# The shipped models' `--optimize auto` choice for CPU hosts, made here once (OpenVINO IR and int8
# calibration included) so a CPU server starts with it instead of trying every variant; GPU hosts choose
# among eager precisions at start-up, which takes seconds. See docs/performance.md.
COPY weights/ weights/
RUN /app/.venv/bin/resnet-optimize --device cpu weights/*.safetensors

# --- runtime: the interpreter, the venv and the shipped weights; no uv, no compilers ----------
FROM ${CUDA_IMAGE} AS runtime
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 \
    && apt-get clean \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --create-home --uid 10001 --user-group resnet \
    && useradd --no-create-home --uid 10002 --user-group trainer \
    && install -d -o 10002 -g 10002 /data
WORKDIR /app
# Owned by root (COPY's default), readable by all: the app code (in the venv) and the shipped weights.
COPY --from=build /app/.venv /app/.venv
COPY --from=build /app/weights/ /app/weights/
# The directory (not the files in it) belongs to the training user; before VOLUME, or it would not stick.
RUN chown 10002:10002 /app/weights
ENV PATH=/app/.venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    MPLCONFIGDIR=/tmp/matplotlib \
    RESNET_SERVE_HOST=0.0.0.0 \
    RESNET_SERVE_PORT=8000 \
    RESNET_SERVE_WEIGHTS_DIR=/app/weights
USER 10001:10001
# Checkpoints to serve, and where `resnet-train --output-dir /app/weights` (as uid 10002) writes new ones.
VOLUME ["/app/weights"]
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=5s --start-period=120s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request as u; u.urlopen('http://127.0.0.1:%s/health' % os.environ.get('RESNET_SERVE_PORT', '8000'), timeout=4)"]
# No wrapper: the command is PID 1 and gets SIGTERM itself (the service drains on it).
ENTRYPOINT []
CMD ["resnet-serve"]
