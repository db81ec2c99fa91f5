"""``python -m bench.soak``: a few seconds against a real server, and the verdict on made-up records."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from bench.soak_load import OUTCOMES, Shot, answer_matches, bad_shots, mix
from bench.soak_report import Thresholds, verdict

REPO = Path(__file__).resolve().parents[2]


def test_short_soak_of_a_healthy_server_passes(tmp_path: Path) -> None:
    out = tmp_path / "results" / "soak"
    cmd = [
        *[sys.executable, "-m", "bench.soak", "--duration-s", "6", "--interval-s", "2", "--warmup-s", "2"],
        *["--concurrency", "4", "--threads", "1", "--work-dir", str(tmp_path / "work"), "--out", str(out)],
    ]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    results = json.loads(out.with_suffix(".json").read_text())
    assert results["machine"]["commit"] and results["machine"]["command"].startswith("python -m bench.soak")
    records = results["intervals"]
    assert [r["warmup"] for r in records] == [True, False, False]
    for r in records:
        assert r["requests"] > 0 and r["throughput"] > 0 and r["responses"]["2xx"] > 0
        assert set(r["responses"]) == set(OUTCOMES)
        assert 0 < r["latency_ms"]["p50"] <= r["latency_ms"]["p99"]
        assert r["rss_mb"] > 0 and r["processes"] >= 1 and r["fds"] > 0
        assert {"too_large", "bad_image"} <= set(r["rejected"])
    assert sum(r["responses"]["4xx_expected"] for r in records) > 0  # the bad requests were sent
    v = results["verdict"]
    assert v["passed"] is True and v["failures"] == []
    for key in ("rss_growth_mb", "rss_growth_pct", "rss_slope_second_half_mb_per_min", "fd_growth", "totals"):
        assert key in v
    assert "**Verdict: PASS**" in out.with_suffix(".md").read_text() and "| t s |" in proc.stdout
    assert out.with_suffix(".png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _records(rss: list[float], fds: int = 20, **responses: int) -> list[dict[str, Any]]:
    counts = {k: 0 for k in OUTCOMES} | {"2xx": 100}
    return [
        {
            "t_s": 10.0 * (i + 1),
            "warmup": i == 0,
            "rss_mb": mb,
            "fds": fds,
            "responses": counts | (responses if i else {}),
        }
        for i, mb in enumerate(rss)
    ]


def test_verdict_fails_on_server_errors_and_growth_and_warns_on_rising_rss() -> None:
    limits = Thresholds(max_rss_growth_mb=100, max_fd_growth=10, rising_mb_per_min=1.0)
    steady = verdict(_records([500, 800, 801, 800, 800, 800]), limits)
    assert steady["passed"] and steady["rss_growth_mb"] == 0 and not steady["rss_rising"]  # warm-up ignored

    errors = verdict(_records([800] * 4, **{"5xx": 1, "transport": 2}), limits)
    assert not errors["passed"] and errors["failures"] == ["3 5xx", "6 transport"]

    leak = verdict(_records([800, 800, 850, 900, 950, 1000, 1050]), limits)
    assert not leak["passed"] and leak["rss_growth_mb"] == 250 and leak["rss_growth_pct"] == 31.2
    assert leak["rss_slope_second_half_mb_per_min"] == 300
    assert leak["rss_rising"] and leak["warnings"]

    died = verdict(_records([800, 800]), limits, server_exit=-9)
    assert died["failures"] == ["the server exited with status -9"]


def test_mix_spreads_the_bad_requests_and_answers_are_checked_against_the_reference() -> None:
    good = [Shot(f"g{i}", b"png", "image/png", "m", True) for i in range(2)]
    cycle = mix(good, bad_shots(b"\x89PNG" + bytes(100), "image/png", "m", max_upload_bytes=1000))
    assert len(cycle) == 50 and [s.name for s in cycle if not s.good] == ["truncated", "not-an-image", "oversize"]
    assert len(next(s for s in cycle if s.name == "oversize").body) == 1001

    reference = {0: 0.5, 1: 0.3, 2: 0.2}
    right = {"model": "m", "predictions": [{"index": 0, "score": 0.5}, {"index": 1, "score": 0.3000001}]}
    assert answer_matches(right, "m", reference, top_k=2)
    assert not answer_matches(right, "other", reference, top_k=2)
    skipped = {"model": "m", "predictions": [{"index": 0, "score": 0.5}, {"index": 2, "score": 0.2}]}
    assert not answer_matches(skipped, "m", reference, top_k=2)
