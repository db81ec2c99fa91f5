"""A real ``resnet-serve`` process, as a client sees it: no forged text-log lines, no training paths."""

from __future__ import annotations

from pathlib import Path

from serve_helpers import wait_until


def test_text_log_and_models_as_a_client_sees_them(start_server, weights_dir: Path) -> None:
    server = start_server(["--weights-dir", str(weights_dir), "--log-format", "text", "--torch-threads", "1"])
    server.wait_ready()
    forged = server.get("/x%0A00:00:00%20INFO%20forged%1B%5B2J", headers={"X-Request-ID": "forge-1"})
    assert forged.status_code == 404 and forged.headers["x-request-id"] == "forge-1"
    line = wait_until(
        lambda: next((ln for ln in server.log().splitlines() if "request_id=forge-1" in ln), None),
        30,
        lambda: f"the access line of forge-1 in:\n{server.log()}",
    )
    assert "path=/x\\n00:00:00 INFO forged\\x1b[2J" in line
    assert not any(ln.startswith("00:00:00 INFO forged") for ln in server.log().splitlines())
    assert "\x1b" not in server.log()

    info = server.get("/models/alpha").json()
    assert info["metadata"]["provenance"]["command"] == "[redacted]"
    assert info["metadata"]["training"]["args"] == {} and info["redacted"]
    assert "output_dir" not in server.get("/models").text
