"""The benchmark harness, end to end in a tiny configuration (seconds), so it cannot rot.

Runs ``python -m bench all`` on the small workload: ceiling at batch sizes 1 and 2, then our service
and the plain FastAPI peer (and LitServe when installed) under wrk at concurrency 1 and 4, and checks
the JSON, Markdown and PNG it writes. Figures are checked for sanity only, never for speed.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.skipif(
    shutil.which("wrk") is None and os.environ.get("CI") != "true",
    reason="wrk not installed (apt-get install -y wrk); CI installs it and runs this test",
)


def test_tiny_run_writes_sane_results(tmp_path: Path) -> None:
    systems = "ours,fastapi,floor" + (",litserve" if importlib.util.find_spec("litserve") else "")
    pin = len(os.sched_getaffinity(0)) >= 2  # server on one core, wrk on the other
    out = tmp_path / "results"
    cmd = [
        *[sys.executable, "-m", "bench", "all", "--workload", "small", "--systems", systems],
        *["--concurrency", "1,4", "--duration", "1", "--warmup", "0", "--batch-sizes", "1,2"],
        *["--ceiling-seconds", "0.2", "--probe-seconds", "0.3", "--threads", "1"],
        *["--small-checkpoint", str(tmp_path / "absent.safetensors"), "--work-dir", str(tmp_path / "work")],
        *["--output-dir", str(out), "--sim-processes", "2"],
        *(["--pin"] if pin else []),
    ]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    [json_path] = out.glob("*.json")
    results = json.loads(json_path.read_text())
    small = results["workloads"]["small"]
    assert small["ceiling"]["best_images_per_s"] > 0
    assert [p["batch_size"] for p in small["ceiling"]["points"]] == [1, 2]
    assert small["ceiling"]["latency_floor_ms"] > 0
    assert set(small["systems"]) == set(systems.split(","))
    for system, block in small["systems"].items():
        assert len(block["probes"]) == 2 and block["probe_images_per_s"] > 0, system
        assert [p["concurrency"] for p in block["points"]] == [1, 4], system
        for point in block["points"]:
            assert point["errors"] == 0, (system, point)
            assert point["throughput"] > 0, (system, point)
            lat = point["latency_ms"]
            assert 0 < lat["p50"] <= lat["p90"] <= lat["p99"], (system, point)
            assert point["ratio_to_probe"] > 0 and point["ratio_to_ceiling"] > 0
            assert point["cpu"]["server"] > 0, (system, point)
            assert point["server_cpu_us_per_request"] > 0, (system, point)
    assert {g["goal"] for g in results["goals"]}
    assert results["config"]["pin"] is pin

    # The GPU case on the simulated device: the request path against the floor (pinned), the device table.
    if pin:
        path = results["request_path"]
        assert len(path["rounds"]) == 2 and path["ratio"] > 0 and path["floor_cpu_us_per_request"] > 0
        [floor_goal] = [g for g in results["goals"] if "floor" in g["goal"]]
        assert floor_goal["met"] is (path["ratio"] <= 5.0)
    sim = results["simulated_device"]["small"]
    assert sim["ceiling"]["best_images_per_s"] > 0 and sim["ceiling"]["best_batch_size"] >= 1
    assert [(p["processes"], p["concurrency"]) for p in sim["points"]] == [(2, 64), (2, 256)]
    for point in sim["points"]:
        assert point["errors"] == 0 and point["throughput"] > 0 and point["cores_for_80_percent"] > 0
        ceiling = sim["ceiling"]["best_images_per_s"]
        assert point["ratio_to_ceiling"] == pytest.approx(point["throughput"] / ceiling, 1e-2)
    assert set(sim["projection"]["cores"]) == {"5000", "10000", "20000"}  # JSON keys

    [md_path] = out.glob("*.md")
    table = md_path.read_text()
    assert "| ours | 4 |" in table and "| fastapi | 1 |" in table and "| floor | 4 |" in table
    assert "## Simulated GPU" in table and "### Projection" in table
    [png] = out.glob("*-small.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_ab_compares_a_revision_with_this_checkout(tmp_path: Path) -> None:
    out = tmp_path / "ab.json"
    cmd = [
        *[sys.executable, "-m", "bench.ab", "--baseline", "HEAD", "--rounds", "1", "--duration", "1"],
        *["--warmup", "0", "--concurrency", "1", "--threads", "1", "--work-dir", str(tmp_path / "work")],
        *["--output", str(out)],
    ]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    results = json.loads(out.read_text())
    [round_] = results["rounds"]
    for side in ("baseline", "current"):
        point = round_[side]["1"]
        assert point["throughput"] > 0 and point["errors"] == 0 and point["server_cpu_us_per_request"] > 0
    assert results["summary"]["1"]["throughput_ratio"] > 0
    assert list((tmp_path / "work").glob("baseline-*/app/main.py")), "the baseline tree was not exported"
