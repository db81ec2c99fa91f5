"""``Supervisor``: ``--processes N``, N worker processes serving one port, started and watched.

The parent binds the listening socket, then spawns N workers (``multiprocessing``'s ``spawn``), each
the ordinary one-process server on that socket (the ``target``, ``app.cli.serve_worker``). It never
serves; it waits on the workers' exits and on signals:

- metrics: prometheus-client's multiprocess mode. ``PROMETHEUS_MULTIPROC_DIR`` (a fresh temporary
  directory, or the operator's, emptied) is exported before the first spawn; every worker writes its
  series to files there and ``/metrics`` in any worker adds them up (``app.metrics``). A dead worker's
  live gauges are dropped; its counters and histograms keep counting in the totals.
- readiness: a ``ReadinessBoard`` in shared memory holds each worker's phase; ``/ready`` answers 200
  only when every worker is ready.
- SIGTERM or SIGINT: SIGTERM to every worker (each drains as a single process does); a second signal
  sends a second SIGTERM (stop at once). Exit status 0 when every worker drained cleanly, else 1.
- a worker that dies after it was ready is restarted (its slot back to ``starting`` until the new one
  is ready), up to ``MAX_RESTARTS`` times a minute per slot; one that fails during startup stops the
  others, and the parent exits 1.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import shutil
import signal
import socket
import tempfile
import threading
import time
from collections.abc import Callable
from multiprocessing.connection import wait
from multiprocessing.process import BaseProcess
from pathlib import Path

from prometheus_client import multiprocess

from app.registry import ReadinessBoard
from app.settings import Settings

__all__ = ["Supervisor", "WorkerTarget", "bind"]

log = logging.getLogger("app.supervisor")

#: A worker process's body: ``(index, settings, listening socket, board)``; it exits with its status.
WorkerTarget = Callable[[int, Settings, socket.socket, ReadinessBoard], None]

#: A worker slot restarted this many times within ``RESTART_WINDOW_S`` stops the service (exit 1).
MAX_RESTARTS = 5
RESTART_WINDOW_S = 60.0

_METRICS_DIR = "PROMETHEUS_MULTIPROC_DIR"  # prometheus-client's variable, read by the workers at import


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host:port`` (port 0: any free one), for every worker to accept on."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(2048)  # uvicorn's default backlog (each worker's uvicorn listens again with its own)
    except OSError:
        sock.close()
        raise
    return sock


def _worker_main(
    target: WorkerTarget, index: int, settings: Settings, sock: socket.socket, board: ReadinessBoard
) -> None:
    """A worker process: in a process group of its own, SIGINT blocked, a drain if the supervisor dies, then ``target``.

    A signal sent to the supervisor's whole process group (a terminal's Ctrl-C, ``kill -TERM -PGID``) is
    forwarded by the supervisor as SIGTERM: had the worker received it too, the forwarded one would be a
    second signal, which stops it at once instead of draining.
    """
    os.setpgid(0, 0)  # a signal to the supervisor's process group (kill -TERM -PGID, tini -g) is forwarded once
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    parent = multiprocessing.parent_process()
    assert parent is not None

    def drain_when_orphaned() -> None:  # e.g. the supervisor was killed with SIGKILL
        wait([parent.sentinel])
        log.error("the supervisor process is gone: draining")
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=drain_when_orphaned, name="supervisor-watch", daemon=True).start()
    target(index, settings, sock, board)


def _metrics_dir() -> tuple[Path, bool]:
    """The operator's ``PROMETHEUS_MULTIPROC_DIR`` emptied of metric files, or a new one exported; True if new."""
    given = os.environ.get(_METRICS_DIR)
    if given:
        path = Path(given)
        path.mkdir(parents=True, exist_ok=True)
        for stale in path.glob("*.db"):  # a previous run's series would be added to this one's
            stale.unlink()
        return path, False
    path = Path(tempfile.mkdtemp(prefix="resnet-serve-metrics-"))
    os.environ[_METRICS_DIR] = str(path)
    return path, True


class Supervisor:
    """Runs ``settings.processes`` workers of ``target`` on one socket until a signal, and restarts the dead."""

    def __init__(self, settings: Settings, target: WorkerTarget) -> None:
        self.settings = settings
        self.target = target
        self._context = multiprocessing.get_context("spawn")
        self.board = ReadinessBoard(self._context, settings.processes)
        self._workers: dict[int, BaseProcess] = {}  # index -> its running process
        self._sock: socket.socket | None = None
        self._metrics_dir: Path | None = None
        self._stops = 0  # SIGTERMs sent to the workers: 1 = drain, 2 = stop at once
        self._failed = False
        self._restarts: dict[int, list[float]] = {}  # index -> monotonic times it was restarted

    def run(self) -> int:
        """Serve until SIGTERM/SIGINT; 0 when every worker drained cleanly, 1 otherwise."""
        s = self.settings
        try:
            self._sock = bind(s.host, s.port)
        except OSError as exc:
            log.critical("cannot listen on %s:%d: %s", s.host, s.port, exc)
            return 1
        host, port = self._sock.getsockname()[:2]
        log.info("listening on http://%s:%d with %d worker processes", host, port, s.processes)
        self._metrics_dir, created = _metrics_dir()
        wakeup_r, wakeup_w = os.pipe()
        os.set_blocking(wakeup_w, False)
        previous = {sig: signal.signal(sig, lambda sig, frame: None) for sig in (signal.SIGTERM, signal.SIGINT)}
        previous_wakeup = signal.set_wakeup_fd(wakeup_w, warn_on_full_buffer=False)  # a signal -> a byte there
        try:
            for index in range(s.processes):
                self._start(index)
            self._watch(wakeup_r)
        finally:
            signal.set_wakeup_fd(previous_wakeup)
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            os.close(wakeup_r)
            os.close(wakeup_w)
            self._sock.close()
            if created:
                shutil.rmtree(self._metrics_dir, ignore_errors=True)
        return 1 if self._failed else 0

    def _start(self, index: int) -> None:
        process = self._context.Process(
            target=_worker_main,
            args=(self.target, index, self.settings, self._sock, self.board),
            name=f"resnet-serve-worker-{index}",
        )
        process.start()
        self._workers[index] = process
        log.info("worker started", extra={"worker": index, "pid": process.pid})

    def _watch(self, wakeup: int) -> None:
        """Until every worker has exited: handle each signal and each worker's exit as it comes."""
        while self._workers:
            sentinels = {index: process.sentinel for index, process in self._workers.items()}
            ready = wait([wakeup, *sentinels.values()])
            if wakeup in ready:
                for _ in os.read(wakeup, 64):  # one byte per signal
                    self._stop()
            for index, sentinel in sentinels.items():
                if sentinel in ready:
                    self._exited(index)

    def _stop(self) -> None:
        """SIGTERM to every worker: the first time they drain, the second time they stop at once."""
        self._stops += 1
        if self._stops == 1:
            log.info("draining %d worker processes", len(self._workers))
            assert self._sock is not None
            self._sock.close()  # once the workers close theirs, new connections are refused, not left waiting
        else:
            log.warning("second stop: the worker processes stop at once")
        for process in self._workers.values():
            process.terminate()

    def _exited(self, index: int) -> None:
        process = self._workers.pop(index)
        process.join()
        pid, code = process.pid, process.exitcode
        process.close()
        assert pid is not None
        multiprocess.mark_process_dead(pid, str(self._metrics_dir))
        phase = self.board.phase(index)
        fields = {"worker": index, "pid": pid, "exit_code": code, "phase": phase}
        if self._stops:
            if code != 0:
                self._failed = True
            log.log(logging.INFO if code == 0 else logging.ERROR, "worker exited", extra=fields)
        elif phase in ("ready", "draining") or index in self._restarts:  # it had served (or its slot had)
            recent = [t for t in self._restarts.get(index, []) if time.monotonic() - t < RESTART_WINDOW_S]
            if len(recent) >= MAX_RESTARTS:
                log.critical("worker keeps dying; stopping", extra={**fields, "restarts": len(recent)})
                self._failed = True
                self._stop()
                return
            log.error("worker died while serving; restarting it", extra=fields)
            self._restarts[index] = [*recent, time.monotonic()]
            self.board.set(index, "starting")
            self._start(index)
        else:
            log.critical("worker failed during startup; stopping", extra=fields)
            self._failed = True
            self._stop()
