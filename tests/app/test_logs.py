"""app.logs: the text format keeps one record on one line whatever a client puts into it."""

from __future__ import annotations

import asyncio
import io
import logging
import sys
from collections.abc import Iterator

import httpx
import pytest
from fastapi import FastAPI

from app.logs import TextFormatter, escape_controls
from app.metrics import Metrics
from app.middleware import RequestContextMiddleware

FORGED = "\n12:00:00 INFO    app.access: request status=200"


def record(message: str, *args: object, **extra: object) -> logging.LogRecord:
    made = logging.LogRecord("app.test", logging.INFO, "", 0, message, args, None)
    made.__dict__.update(extra)
    return made


def test_control_characters_are_escaped_in_message_and_fields() -> None:
    line = TextFormatter().format(record("model %s", "m\r" + FORGED, path="/a\x1b[31mred\x07", note="x\u2028y\x85"))
    assert "\n" not in line and "\r" not in line
    assert "\x1b" not in line and "\x07" not in line and "\u2028" not in line and "\x85" not in line
    assert "model m\\r\\n12:00:00 INFO" in line
    assert "path=/a\\x1b[31mred\\x07" in line and "note=x\\u2028y\\x85" in line


def test_plain_text_is_unchanged() -> None:
    assert escape_controls("GET /predict?model=résumé id=abc-123") == "GET /predict?model=résumé id=abc-123"


def test_a_traceback_stays_readable_but_cannot_start_a_record() -> None:
    try:
        raise ValueError("bad" + FORGED)
    except ValueError:
        failed = record("failed")
        failed.exc_info = sys.exc_info()
    first, *rest = TextFormatter().format(failed).splitlines()
    assert first.endswith("app.test: failed")
    assert any("Traceback" in line for line in rest) and any("ValueError: bad" in line for line in rest)
    assert all(line.startswith("    ") for line in rest), "every traceback line is indented"


@pytest.fixture
def text_log() -> Iterator[io.StringIO]:
    """What ``app.access`` writes, in the text format."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(TextFormatter())
    logger = logging.getLogger("app.access")
    logger.addHandler(handler)
    level = logger.level
    logger.setLevel(logging.INFO)
    yield stream
    logger.setLevel(level)
    logger.removeHandler(handler)


def test_a_request_path_cannot_forge_an_access_log_line(text_log: io.StringIO) -> None:
    app = FastAPI()
    app.add_middleware(RequestContextMiddleware, metrics=Metrics())

    async def main() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            # Percent-escapes: the server decodes them into the path it logs.
            return await client.get("/x%0A12:00:00%20INFO%20forged%1B%5B2J")

    assert asyncio.run(main()).status_code == 404
    [line] = text_log.getvalue().splitlines()
    assert "path=/x\\n12:00:00 INFO forged\\x1b[2J" in line
