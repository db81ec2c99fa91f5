"""``--processes 2``: one port, metrics and readiness across the workers, restart, drain, startup failure.

Which worker answered a request is read from the log (every worker's lines carry ``worker``), and the
workers' processes from the supervisor's log and ``/proc``.
"""

from __future__ import annotations

import os
import shutil
import signal
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from serve_helpers import ServerProcess, metric_total, png_bytes, wait_until

pytestmark = pytest.mark.skipif(not Path("/proc/self/stat").is_file(), reason="reads the process tree from /proc")

# Autotune off: every worker then reports the same batch_cap, so model_info agrees across workers.
ENV = {"RESNET_SERVE_AUTOTUNE_BATCH": "false"}
ARGS = ["--processes", "2", "--torch-threads", "1", "--workers", "1"]


@pytest.fixture(scope="module")
def alpha_dir(tmp_path_factory: pytest.TempPathFactory, checkpoints: dict[str, Path]) -> Path:
    """One small model: each worker loads its own copy."""
    directory = tmp_path_factory.mktemp("alpha-only")
    shutil.copy(checkpoints["alpha"], directory / "alpha.safetensors")
    return directory


@pytest.fixture(scope="module")
def server(start_server, alpha_dir: Path) -> ServerProcess:
    args = ["--weights-dir", str(alpha_dir), *ARGS, "--max-batch-size", "8", "--log-level", "debug"]
    server = start_server(args, ENV)  # debug: the /metrics requests are logged too, with their worker
    server.wait_ready()
    return server


def workers(server: ServerProcess) -> dict[int, int]:
    """Worker index -> pid of its current process, from the supervisor's ``worker started`` lines."""
    return {r["worker"]: r["pid"] for r in server.records() if r["msg"] == "worker started"}


def answered(server: ServerProcess, path: str) -> dict[str, int]:
    """Request id -> the worker that answered it, for the requests to ``path`` logged so far."""
    return {r["request_id"]: r["worker"] for r in server.records() if r["msg"] == "request" and r["path"] == path}


def served(server: ServerProcess) -> Counter[int]:
    """How many ``/predict`` requests each worker answered."""
    return Counter(answered(server, "/predict").values())


def children(pid: int) -> set[int]:
    """The worker processes (spawned by ``multiprocessing``) whose parent is ``pid``."""
    found = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
            command = (stat.parent / "cmdline").read_bytes()
        except (OSError, IndexError, ValueError):  # the process ended meanwhile
            continue
        if ppid == pid and b"spawn_main" in command:
            found.add(int(stat.parent.name))
    return found


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def predict(server: ServerProcess) -> int:
    """One ``/predict`` on a connection of its own (so the workers take turns accepting)."""
    files = {"file": ("a.png", png_bytes(), "image/png")}
    return httpx.post(server.url + "/predict", files=files, timeout=60).status_code


def metrics(server: ServerProcess) -> str:
    return server.get("/metrics").text


def model_info(text: str) -> list[str]:
    """The ``model_info`` samples of model alpha."""
    lines = text.splitlines()
    return [line for line in lines if line.startswith("resnet_serve_model_info{") and 'model="alpha"' in line]


def test_metrics_add_up_across_both_workers(server: ServerProcess) -> None:
    pids = workers(server)
    assert sorted(pids) == [0, 1] and children(server.proc.pid) == set(pids.values())
    assert metric_total(metrics(server), "resnet_serve_requests_total", route="/predict") == 0
    sent = 0
    with ThreadPoolExecutor(8) as pool:

        def both_answered() -> bool:
            nonlocal sent
            assert list(pool.map(lambda _: predict(server), range(8))) == [200] * 8
            sent += 8
            return len(served(server)) == 2

        wait_until(both_answered, 60, lambda: f"both workers answering: {served(server)}", interval=0)
    # a request's line is logged, after its counters are counted, once its response has gone
    wait_until(lambda: sum(served(server).values()) == sent, 10, lambda: f"{sent} requests logged: {served(server)}")
    scrapes: dict[str, str] = {}  # request id -> /metrics text

    def scrape(request_id: str) -> None:
        scrapes[request_id] = server.get("/metrics", headers={"X-Request-ID": request_id}).text

    with ThreadPoolExecutor(4) as pool:

        def both_scraped() -> bool:
            list(pool.map(scrape, [f"scrape-{len(scrapes) + i}" for i in range(4)]))
            return {worker for rid, worker in answered(server, "/metrics").items() if rid in scrapes} == {0, 1}

        wait_until(both_scraped, 30, "both workers answering /metrics", interval=0)
    for text in scrapes.values():  # whichever worker answers adds up every worker's series
        assert metric_total(text, "resnet_serve_requests_total", route="/predict", status="200") == sent
        assert metric_total(text, "resnet_serve_images_total", model="alpha") == sent
        assert metric_total(text, "resnet_serve_batch_size_sum", model="alpha") == sent
        info = model_info(text)
        assert len(info) == 1 and info[0].endswith(" 1.0"), info


def test_a_killed_worker_is_replaced_and_ready_waits_for_it(server: ServerProcess) -> None:
    before = metric_total(metrics(server), "resnet_serve_requests_total", route="/predict", status="200")
    victim, counted = served(server).most_common(1)[0]  # a worker whose counts must survive it
    assert before > 0 and counted > 0
    old = workers(server)
    os.kill(old[victim], signal.SIGKILL)

    def ready(status: int) -> httpx.Response | None:
        response = server.get("/ready")
        return response if response.status_code == status else None

    not_ready = wait_until(lambda: ready(503), 30, "/ready 503 once a worker is gone")
    # answered by the survivor (the replacement takes seconds to start): ready itself, but not its peer
    assert not_ready.json()["detail"] == f"worker processes not ready: {victim} (starting)"
    wait_until(lambda: ready(200), 90, lambda: f"/ready 200 again:\n{server.log()}")
    new = workers(server)
    assert new[victim] != old[victim] and new[1 - victim] == old[1 - victim]
    assert children(server.proc.pid) == set(new.values()) and not alive(old[victim])
    assert "worker died while serving; restarting it" in server.log()
    after = metrics(server)
    assert metric_total(after, "resnet_serve_requests_total", route="/predict", status="200") == before
    info = model_info(after)
    assert len(info) == 1 and info[0].endswith(" 1.0"), info
    assert predict(server) == 200


def test_sigterm_drains_every_worker_then_exits_0(start_server, alpha_dir: Path) -> None:
    """Requests held in the batchers (a long --max-wait-ms) when SIGTERM comes are all answered."""
    args = ["--weights-dir", str(alpha_dir), *ARGS, "--max-batch-size", "64", "--max-wait-ms", "3000"]
    server = start_server(args, ENV)
    server.wait_ready()
    pids = set(workers(server).values())
    assert len(pids) == 2
    with ThreadPoolExecutor(8) as pool:
        in_flight = [pool.submit(predict, server) for _ in range(8)]

        def all_queued() -> bool:  # preprocessed, so admitted and waiting for their batch
            return metric_total(metrics(server), "resnet_serve_preprocess_seconds_count") == 8

        wait_until(all_queued, 30, "8 requests admitted")
        assert metric_total(metrics(server), "resnet_serve_batch_size_count") == 0  # none has run yet
        server.proc.send_signal(signal.SIGTERM)
        assert [f.result() for f in in_flight] == [200] * 8
    assert server.proc.wait(30) == 0
    assert not any(alive(pid) for pid in pids)
    exits = [r for r in server.records() if r["msg"] == "worker exited"]
    assert sorted((r["worker"], r["exit_code"], r["phase"]) for r in exits) == [(0, 0, "draining"), (1, 0, "draining")]


def test_a_worker_failing_at_startup_stops_the_service_with_1(start_server, tmp_path: Path) -> None:
    server = start_server(["--weights-dir", str(tmp_path), *ARGS])
    assert server.proc.wait(60) == 1
    assert "no loadable" in server.log() and "worker failed during startup; stopping" in server.log()
