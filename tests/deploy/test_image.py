"""The image, built from the Dockerfile with podman and run: served as the unprivileged user, answering
correctly, healthy, training into a volume the server then loads, and draining on SIGTERM.

No Docker engine runs here, and ``nvidia/cuda`` cannot be pulled: the image is built on a local Debian base
(``scripts/podman-base``) through the Dockerfile's ``CUDA_IMAGE`` argument, on the CPU. The podman settings
this machine needs, found by trying (docs/deploy.md): the ``runc`` runtime (crun refuses the hybrid cgroups),
containers' ulimits at or below this process's (podman's defaults are above them, and runc cannot raise a
limit), the host network, and ``--format docker`` so that the image keeps its ``HEALTHCHECK``.

Skipped, with the reason, where podman cannot run (not installed, not root, no way to make the base);
``.ci/run`` installs podman and sets ``RESNET_SERVE_IMAGE_TEST=require``, which turns those skips into
failures. The build reuses this machine's uv cache (``scripts/uv cache dir``) when there is one, so it
downloads no wheel the test environment already has. The base and the built image are kept for reruns
(``podman rmi resnet-serve:image-test localhost/debian-base:bookworm`` reclaims the space); containers and
volumes are removed.
"""

from __future__ import annotations

import os
import resource
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from deploy_files import ROOT
from e2e.serve_helpers import free_port, wait_until

from models import read_golden

pytestmark = [pytest.mark.image, pytest.mark.timeout(3600)]

BASE = "localhost/debian-base:bookworm"
IMAGE = "localhost/resnet-serve:image-test"
PREFIX = "resnet-image-test"
KEY = "image-test-key"
AUTH = {"Authorization": f"Bearer {KEY}"}
SHIPPED = ROOT / "weights" / "resnet20-fashion-mnist.safetensors"


def unavailable(reason: str) -> None:
    """Skip, or fail where CI said the image test must run."""
    if os.environ.get("RESNET_SERVE_IMAGE_TEST") == "require":
        pytest.fail(f"{reason} (RESNET_SERVE_IMAGE_TEST=require)")
    pytest.skip(reason)


def ulimits() -> list[str]:
    """``--ulimit`` flags at or below this process's limits, which runc cannot raise without CAP_SYS_RESOURCE.

    podman's defaults (1048576 open files and processes) are above them. The process count is also capped at
    4096, plenty for the server or a training run: podman 4.3 starts the container's monitor (conmon) with at
    most 32768, and a container cannot have more than that either.
    """
    flags = []
    for name, which, cap in (("nofile", resource.RLIMIT_NOFILE, 65536), ("nproc", resource.RLIMIT_NPROC, 4096)):
        limit = min(v for v in (*resource.getrlimit(which), cap) if v != resource.RLIM_INFINITY)
        flags += ["--ulimit", f"{name}={limit}:{limit}"]
    return flags


RUN = ["--runtime", "runc", *ulimits(), "--network", "host"]


def podman(*args: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(["podman", *args], capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(f"podman {' '.join(args)}: exit {result.returncode}\n{result.stdout}{result.stderr}")
    return result


def tail(text: str, lines: int = 40) -> str:
    return "\n".join(text.splitlines()[-lines:])


def report(request: pytest.FixtureRequest, line: str) -> None:
    """A line in pytest's output, past its capture (which hides prints of passing tests)."""
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    if reporter is not None and capture is not None:
        with capture.global_and_fixture_disabled():
            reporter.write_line(f"image test: {line}")


@pytest.fixture(scope="module")
def image(request: pytest.FixtureRequest) -> str:
    """The image, built from the repository with the local base; its size and build time reported."""
    missing = [tool for tool in ("podman", "runc") if shutil.which(tool) is None]
    if missing:
        unavailable(f"{' and '.join(missing)} not installed (apt-get install podman runc debootstrap; .ci/run does)")
    if os.geteuid() != 0:
        unavailable("needs root: the base is made with debootstrap, and rootless podman is not set up here")
    base = subprocess.run([str(ROOT / "scripts" / "podman-base")], capture_output=True, text=True, timeout=1800)
    if base.returncode != 0:
        unavailable(f"could not make the base {BASE} (no Debian mirror reachable?):\n{tail(base.stderr)}")
    smoke = podman("run", "--rm", *RUN, BASE, "true", check=False)
    if smoke.returncode != 0:
        unavailable(f"podman cannot run a container here:\n{tail(smoke.stderr)}")

    # No --ulimit: the build's RUN steps keep podman's own limits.
    build = ["build", "--format", "docker", "--runtime", "runc", "--network", "host", "-t", IMAGE]
    build += ["--build-arg", f"CUDA_IMAGE={BASE}"]
    cache = subprocess.run([str(ROOT / "scripts" / "uv"), "cache", "dir"], capture_output=True, text=True)
    if cache.returncode == 0 and Path(cache.stdout.strip()).is_dir():
        build += ["--volume", f"{cache.stdout.strip()}:/uv-cache", "--build-arg", "UV_CACHE_DIR=/uv-cache"]
    started = time.monotonic()
    built = podman(*build, str(ROOT), timeout=3000, check=False)
    seconds = time.monotonic() - started
    assert built.returncode == 0, f"podman build failed after {seconds:.0f} s:\n{tail(built.stdout + built.stderr, 80)}"
    size = int(podman("image", "inspect", "--format", "{{.Size}}", IMAGE).stdout)
    report(request, f"built {IMAGE} in {seconds:.0f} s; size {size / 1e9:.2f} GB")
    return IMAGE


class Container:
    """A server container from the image on a free host port; removed (with its anonymous volumes) at the end."""

    def __init__(self, image: str, name: str, *args: str) -> None:
        self.name = name
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {"RESNET_SERVE_PORT": str(self.port), "RESNET_SERVE_HOST": "127.0.0.1", "RESNET_SERVE_DEVICE": "cpu"}
        env["RESNET_SERVE_API_KEY"] = KEY
        podman("rm", "-f", "-v", name, check=False)
        flags = [flag for key, value in env.items() for flag in ("-e", f"{key}={value}")]
        podman("run", "-d", "--name", name, *RUN, *flags, *args, image)

    def status(self) -> str:
        return podman("container", "inspect", "--format", "{{.State.Status}}", self.name).stdout.strip()

    def logs(self) -> str:
        result = podman("logs", self.name, check=False)
        return result.stdout + result.stderr

    def get(self, path: str) -> httpx.Response:
        return httpx.get(self.url + path, headers=AUTH, timeout=30)

    def wait_ready(self, timeout: float = 600) -> None:
        def ready() -> bool:
            try:
                return self.get("/ready").status_code == 200
            except httpx.TransportError:
                if self.status() not in ("created", "running"):
                    raise AssertionError(f"{self.name} {self.status()}:\n{tail(self.logs())}") from None
                return False

        wait_until(ready, timeout, lambda: f"{self.name} ready:\n{tail(self.logs())}", interval=0.5)

    def remove(self) -> None:
        podman("rm", "-f", "-v", self.name, check=False)


@pytest.fixture(scope="module")
def server(image: str) -> Iterator[Container]:
    """The image as shipped: its own weights, the CPU, an API key; ``--optimize auto`` (the image's default)."""
    container = Container(image, f"{PREFIX}-serve")
    try:
        container.wait_ready()
        yield container
    finally:
        container.remove()


def test_serves_as_the_unprivileged_user_who_cannot_change_code_or_weights(server: Container) -> None:
    assert podman("exec", server.name, "id", "-u").stdout.strip() == "10001"
    for path in ("/app/weights/new.safetensors", "/app/.venv/new"):
        assert podman("exec", server.name, "touch", path, check=False).returncode != 0, f"uid 10001 wrote {path}"


def test_predict_answers_the_shipped_models_golden_images(server: Container) -> None:
    golden = read_golden(SHIPPED)
    assert golden is not None
    anonymous = httpx.post(server.url + "/predict", files={"file": ("a.png", golden.images[0], "image/png")})
    assert anonymous.status_code == 401, "the API key is not required"
    right = 0
    for i in range(8):
        files = {"file": (f"{i}.png", golden.images[i], "image/png")}
        response = httpx.post(server.url + "/predict", files=files, headers=AUTH, timeout=60)
        assert response.status_code == 200, response.text
        top = response.json()["predictions"][0]["index"]
        assert top == int(golden.probs[i].argmax()), f"golden image {i}: {top}, recorded {golden.probs[i].argmax()}"
        right += top == golden.targets[i]
    assert right >= 6, f"{right} of 8 golden images classified right"
    # The variant chosen at build time (resnet-optimize in the Dockerfile), read from the image's cache.
    info = server.get(f"/models/{SHIPPED.stem}").json()
    assert info["optimization"]["cached"] is True, info["optimization"]


def test_the_web_page_and_the_v2_protocol_are_served_from_the_image(server: Container) -> None:
    # The page's files are package data: a wheel that left them out would answer 404 here, not in the tests.
    page = httpx.get(server.url + "/", timeout=30)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html"), page.text[:200]
    for name in ("page.js", "page.css"):
        assert httpx.get(server.url + f"/static/{name}", timeout=30).status_code == 200, name
    ready = server.get(f"/v2/models/{SHIPPED.stem}/ready")
    assert ready.status_code == 200, ready.text


def test_the_images_health_check_passes(image: str, server: Container) -> None:
    healthcheck = podman("image", "inspect", "--format", "{{.Config.Healthcheck}}", image).stdout.strip()
    assert healthcheck not in ("", "<nil>"), "no HEALTHCHECK in the image (built without --format docker?)"
    check = podman("healthcheck", "run", server.name, check=False)
    assert check.returncode == 0, check.stdout + check.stderr


def test_training_in_the_image_writes_a_checkpoint_the_server_loads(image: str) -> None:
    volume = f"{PREFIX}-weights"
    podman("volume", "rm", "-f", volume, check=False)
    podman("volume", "create", volume)
    trained: Container | None = None
    try:
        train = ["run", "--rm", *RUN, "--user", "10002:10002", "-v", f"{volume}:/app/weights", "-e", "HOME=/tmp"]
        train += [image, "resnet-train", "--arch", "resnet20", "--dataset", "synthetic", "--limit", "64"]
        train += ["--epochs", "1", "--batch-size", "32", "--device", "cpu", "--no-progress", "--data-dir", "/tmp/data"]
        train += ["--output-dir", "/app/weights", "--name", "tiny"]
        result = podman(*train, timeout=900, check=False)
        assert result.returncode == 0, tail(result.stdout + result.stderr)
        # Eager: --optimize auto would try every variant of the new model first (tested with the shipped one).
        eager = ["-v", f"{volume}:/app/weights:ro", "-e", "RESNET_SERVE_OPTIMIZE=off"]
        trained = Container(image, f"{PREFIX}-trained", *eager)
        trained.wait_ready()
        models = {m["name"]: m["state"] for m in trained.get("/models").json()["models"]}
        assert models.get("tiny") == "ready", models
        files = {"file": ("a.png", read_golden(SHIPPED).images[0], "image/png")}  # type: ignore[union-attr]
        response = httpx.post(trained.url + "/predict?model=tiny", files=files, headers=AUTH, timeout=60)
        assert response.status_code == 200 and response.json()["model"] == "tiny", response.text
    finally:
        if trained is not None:
            trained.remove()
        podman("volume", "rm", "-f", volume, check=False)


def test_sigterm_drains_and_the_container_exits_0(server: Container) -> None:
    podman("kill", "--signal", "TERM", server.name)
    exit_code = podman("wait", server.name, timeout=120).stdout.strip()
    logs = server.logs()
    assert exit_code == "0", tail(logs)
    assert "draining" in logs
