"""``resnet-serve``: flags -> ``Settings`` -> process tuning -> uvicorn, with a drain on SIGTERM.

The flags are generated from ``Settings`` (one per field, tuning knobs excepted), so a setting is
declared once. Every flag has an environment twin (``--max-batch-size`` /
``RESNET_SERVE_MAX_BATCH_SIZE``); a flag given on the command line wins over the environment, which
wins over the default. With ``--processes N`` (N > 1), ``app.supervisor`` runs N processes of the
same server (``serve_worker``) on one socket.
"""

from __future__ import annotations

import argparse
import logging
import socket
import sys
import threading
import types
from collections.abc import Callable
from functools import partial
from pathlib import Path
from types import FrameType
from typing import Any, Literal, Union, get_args, get_origin

import uvicorn
from pydantic import ValidationError
from pydantic.fields import FieldInfo

from app import __version__
from app.logs import configure_logging
from app.main import create_app
from app.protocol import header_timeout_protocol
from app.registry import ModelRegistry, ReadinessBoard
from app.settings import Settings
from app.supervisor import Supervisor
from app.tuning import freeze_startup_objects, tune_process

__all__ = ["main", "get_args_parser", "serve", "serve_worker"]

log = logging.getLogger("app.cli")


def _argument_options(field: FieldInfo) -> dict[str, Any]:
    """argparse options for a field's type: on/off pair for bools, choices for Literals, int/float parsing."""
    annotation = field.annotation
    if get_origin(annotation) in (Union, types.UnionType):  # ``X | None``: the flag gives an X
        annotation = next(arg for arg in get_args(annotation) if arg is not type(None))
    if annotation is bool:
        return {"action": argparse.BooleanOptionalAction}
    if get_origin(annotation) is Literal:
        return {"choices": list(get_args(annotation))}
    if annotation in (int, float):
        return {"type": annotation}
    if annotation is Path:
        return {"type": Path, "metavar": "PATH"}
    return {}  # str, and comma-separated lists that Settings splits itself


def _help(name: str, field: FieldInfo) -> str:
    """The field's description, its default (unless the description states it) and its environment twin."""
    parts = [field.description or name]
    if "default" not in parts[0]:
        try:
            default = field.get_default(call_default_factory=True)
        except ValueError:  # a default computed from other settings: its description must state it
            raise ValueError(f"the description of {name!r} must state its computed default") from None
        parts.append(f"default {default if default not in (None, []) else 'none'}")
    parts.append(f"env RESNET_SERVE_{name.upper()}")
    return "; ".join(parts).replace("%", "%%")  # argparse formats help with %


def get_args_parser() -> argparse.ArgumentParser:
    """One flag per operator setting; defaults are ``None`` so only flags given override the environment."""
    p = argparse.ArgumentParser(prog="resnet-serve", description="Serve ResNet checkpoints over HTTP.")
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    for name in Settings.flag_names():
        field = Settings.model_fields[name]
        p.add_argument(
            f"--{name.replace('_', '-')}",
            dest=name,
            default=None,
            help=_help(name, field),
            **_argument_options(field),
        )
    return p


class DrainingServer(uvicorn.Server):
    """On SIGTERM/SIGINT: ``/ready`` turns 503, then (after ``grace_s``) uvicorn's graceful shutdown.

    Exits with status 0 after a clean drain instead of re-raising the signal.
    """

    def __init__(self, config: uvicorn.Config, drain: Callable[[], None], grace_s: float) -> None:
        super().__init__(config)
        self.drain = drain
        self.grace_s = grace_s
        self._draining = False

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self._draining:  # a second signal: stop now
            self.should_exit = self.force_exit = True
            return
        self._draining = True
        self.drain()
        if self.grace_s > 0:
            timer = threading.Timer(self.grace_s, self._exit)
            timer.daemon = True
            timer.start()
        else:
            self._exit()

    def _exit(self) -> None:
        self.should_exit = True


def _describe(error: Any) -> str:
    """A pydantic error about a setting as ``--flag: message`` (a check across settings: its message)."""
    message = str(error["msg"]).removeprefix("Value error, ")
    if not error["loc"]:
        return message
    return f"--{str(error['loc'][0]).replace('_', '-')}: {message}"


def main(argv: list[str] | None = None) -> int:
    """Parse flags, tune the process, serve until SIGTERM; 0 after a clean drain, 1 when startup fails."""
    parser = get_args_parser()
    args = parser.parse_args(argv)
    overrides = {k: v for k, v in vars(args).items() if v is not None}
    try:
        settings = Settings(**overrides)
    except ValidationError as exc:  # one clause per bad setting, without pydantic's decoration
        errors = [e for e in exc.errors(include_url=False) if e["type"] != "default_factory_not_called"]
        parser.error("; ".join(_describe(error) for error in errors))
    configure_logging(settings.log_level, settings.log_format)
    if settings.processes > 1:
        return Supervisor(settings, serve_worker).run()
    tune_process(settings)
    return serve(settings)


def serve_worker(index: int, settings: Settings, sock: socket.socket, board: ReadinessBoard) -> None:
    """Worker ``index`` of ``--processes`` (the supervisor's target, in a spawned process): serve on ``sock``.

    Its log lines carry ``worker``; its phases go to its slot of ``board``, which ``/ready`` reads.
    """
    configure_logging(settings.log_level, settings.log_format, worker=index)
    tune_process(settings)  # per process: allocator, collector, torch threads
    sys.exit(serve(settings, sockets=[sock], board=board, worker=index))


def serve(
    settings: Settings,
    *,
    sockets: list[socket.socket] | None = None,
    board: ReadinessBoard | None = None,
    worker: int = 0,
) -> int:
    """This process serves until SIGTERM; 0 after a clean drain, 1 when startup fails.

    ``sockets``: listen on these instead of binding ``host:port``; ``board``: the readiness board of
    ``--processes``, where this process is worker ``worker``.
    """
    server: DrainingServer | None = None

    def stop_on_fatal(reason: str) -> None:
        if server is not None:
            server.handle_exit(0, None)

    app = create_app(settings, on_fatal=stop_on_fatal, on_ready=freeze_startup_objects)
    registry: ModelRegistry = app.state.registry
    if board is not None:
        app.state.board = board  # read by /ready
        registry.on_phase = partial(board.set, worker)
        board.set(worker, registry.state)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=int(settings.timeout_s) + 5,
        server_header=False,
        limit_concurrency=settings.max_connections,
        timeout_keep_alive=settings.keep_alive_s,
        http=header_timeout_protocol(settings.header_timeout_s),
    )
    server = DrainingServer(config, registry.drain, settings.drain_grace_s)
    try:
        server.run(sockets=sockets)
    except SystemExit:  # uvicorn's exit (status 3) when the lifespan raised; the reason is logged as "startup failed"
        return 1
    if registry.state == "failed" or not server.started:
        return 1
    return 0
