"""Logging set-up: one line per event, JSON (default) or plain text, fields from ``extra=``."""

from __future__ import annotations

import logging
import re
import sys
import time
from typing import Any

import orjson

__all__ = ["configure_logging", "escape_controls", "JsonFormatter", "TextFormatter", "WorkerField"]

# Attributes every LogRecord has; anything else on a record came from ``extra=`` and is logged as a field.
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message",
    "asctime",
    "taskName",
    "color_message",
}


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in record.__dict__.items() if k not in _STANDARD}


class JsonFormatter(logging.Formatter):
    """``{"ts": ..., "level": ..., "logger": ..., "msg": ..., **extra}`` on one line."""

    def format(self, record: logging.LogRecord) -> str:
        line = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
            **_fields(record),
        }
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(line, default=str, option=orjson.OPT_NON_STR_KEYS).decode()


#: Characters that could start a new line or drive a terminal: C0 and C1 controls, DEL, Unicode line and
#: paragraph separators, and bidirectional overrides (which reorder what a terminal shows).
_UNSAFE = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape_char(match: re.Match[str]) -> str:
    char = match[0]
    return _NAMED.get(char) or (f"\\x{ord(char):02x}" if ord(char) < 0x100 else f"\\u{ord(char):04x}")


def escape_controls(text: str) -> str:
    """``text`` with control characters written as ``repr``-style escapes (``\\n``, ``\\x1b``, ``\\u2028``)."""
    return _UNSAFE.sub(_escape_char, text)


class TextFormatter(logging.Formatter):
    """``time level logger: message key=value ...``, one line per record.

    Messages and fields carry client-controlled text (paths, headers, model names): control characters
    in them are escaped, so no value can start a forged log line or send terminal escapes. A traceback
    keeps its line breaks, each of its lines indented so that none looks like the start of a record.
    """

    def format(self, record: logging.LogRecord) -> str:
        stamp = time.strftime("%H:%M:%S", time.localtime(record.created))
        fields = "".join(f" {k}={v}" for k, v in _fields(record).items())
        text = escape_controls(f"{stamp} {record.levelname:<7} {record.name}: {record.getMessage()}{fields}")
        if record.exc_info:
            lines = self.formatException(record.exc_info).splitlines()
            text += "".join(f"\n    {escape_controls(line)}" for line in lines)
        return text


class WorkerField(logging.Filter):
    """Adds the field ``worker`` (the index of this worker process of ``--processes``) to every line."""

    def __init__(self, worker: int) -> None:
        super().__init__()
        self.worker = worker

    def filter(self, record: logging.LogRecord) -> bool:
        record.worker = self.worker
        return True


def configure_logging(level: str = "info", fmt: str = "json", *, worker: int | None = None) -> None:
    """Route the root logger (and uvicorn's) to stderr in the chosen format; uvicorn's access log is off.

    In a worker process of ``--processes``, ``worker`` is its index, logged on every line.
    """
    # What the Logging HOWTO's "Optimization" section lists: no line ever shows the caller's file and line,
    # thread, process or task, so no record computes them (about a fifth of an access-log line's cost).
    logging._srcfile = None  # type: ignore[attr-defined]
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False
    logging.logAsyncioTasks = False  # type: ignore[attr-defined]
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    if worker is not None:
        handler.addFilter(WorkerField(worker))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
    logging.getLogger("uvicorn.access").disabled = True
