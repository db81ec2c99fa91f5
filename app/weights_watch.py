"""``WeightsWatcher``: ``--watch-weights``, the weights directory followed by the model control operations.

It polls the directory's ``*.safetensors`` files (names starting with a dot are ignored: temporary files of
an atomic copy) for their size and modification time, which works on every filesystem, Kubernetes volume
and bind mount alike. A file acts once its size and mtime have stayed the same for ``--watch-debounce-s``,
so a half-copied file is never loaded:

    appeared, or changed, and not served -> ``load``
    changed, and served                  -> ``reload`` (checked hot-swap; a no-op when the content is the same)
    disappeared, and served              -> ``unload`` (never the default model: it keeps serving)

When it starts, every file counts as changed: a file that appeared, or changed, while the models loaded is
followed too. A refused candidate is logged and counted (``ModelControl``) and tried again only when the
file changes again; an operation already in progress on the model is retried at the next poll.
"""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path

from app.errors import Conflict, ServeError
from app.model_control import MODEL_NAME, ModelControl

__all__ = ["FileStat", "WeightsWatcher", "checkpoint_stats"]

log = logging.getLogger("app.weights_watch")

#: A file's size and modification time (ns); ``None``: the file is absent.
FileStat = tuple[int, int] | None


def checkpoint_stats(weights_dir: Path) -> dict[str, tuple[int, int]]:
    """Model name -> (size, mtime_ns) of every ``NAME.safetensors`` in ``weights_dir`` a model name can have."""
    stats = {}
    try:
        entries = list(weights_dir.iterdir())
    except OSError:
        return {}
    for path in entries:
        if path.suffix != ".safetensors" or not MODEL_NAME.fullmatch(path.stem):
            continue
        try:
            st = path.stat()
        except OSError:  # removed since listed
            continue
        stats[path.stem] = (st.st_size, st.st_mtime_ns)
    return stats


class WeightsWatcher:
    """Polls ``weights_dir`` every ``poll_s`` and applies settled changes through ``control``."""

    def __init__(self, control: ModelControl, *, debounce_s: float, poll_s: float | None = None) -> None:
        self.control = control
        self.weights_dir = control.registry.weights_dir
        self.debounce_s = debounce_s
        self.poll_s = poll_s if poll_s is not None else min(1.0, debounce_s / 2)
        self._settled: dict[str, FileStat] = {}  # name -> the stat last acted upon
        self._pending: dict[str, tuple[FileStat, float]] = {}  # name -> (stat, monotonic time it was first seen)

    async def run(self) -> None:
        """Poll until cancelled."""
        log.info("watching the weights directory", extra={"debounce_s": self.debounce_s})
        for name in self.control.registry.services:  # served: a file gone while loading is noticed too
            self._pending[name] = (None, time.monotonic())
        while True:
            await self.poll()
            await asyncio.sleep(self.poll_s)

    async def poll(self, now: float | None = None) -> None:
        """One look at the directory: note changes, act on those that have settled (``now``: a monotonic time)."""
        now = time.monotonic() if now is None else now
        stats: dict[str, FileStat] = dict(await asyncio.to_thread(checkpoint_stats, self.weights_dir))
        for name in stats.keys() | self._settled.keys() | self._pending.keys():
            stat = stats.get(name)
            pending = self._pending.get(name)
            if pending is not None:
                if pending[0] != stat:  # still being written (or removed): the clock starts again
                    self._pending[name] = (stat, now)
            elif name not in self._settled or self._settled[name] != stat:
                self._pending[name] = (stat, now)
        for name, (stat, since) in list(self._pending.items()):
            if now - since >= self.debounce_s and await self._apply(name, stat):
                del self._pending[name]
                self._settled[name] = stat

    async def _apply(self, name: str, stat: FileStat) -> bool:
        """Load, reload or unload ``name``; False to try again at the next poll (another operation was running)."""
        control = self.control
        served = name in control.registry.services
        try:
            if stat is None:
                if served:
                    await control.unload(name)
            elif served:
                result = await control.reload(name)
                if not result.changed:
                    log.debug("checkpoint touched, content unchanged", extra={"model": name})
            else:
                await control.load(name)
        except Conflict as exc:
            if name in control.busy:
                return False
            log.warning("watch: %s", exc.detail, extra={"model": name})  # e.g. the default model's file removed
        except ServeError as exc:  # refused (already logged and counted), or draining
            log.info("watch: %s", exc.detail, extra={"model": name})
        except Exception:
            log.exception("watch: operation failed", extra={"model": name})
        return True
