"""``cancel_on_disconnect``: stop a request's work when its client hangs up.

Once a request's body is read, the ASGI server's ``receive()`` has nothing left to return but
``http.disconnect``, when the client goes away. A watcher task waits for it and cancels the
request's task, wherever that task is: waiting for a decode in the worker pool (a decode not yet
started is then never run), or queued in the batcher (a cancelled entry is left out of the next
batch; an entry in a running batch is dropped when the batch ends, without disturbing its
batch-mates). The request then ends with ``ClientDisconnect``, counted as ``disconnected``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from starlette.requests import ClientDisconnect
from starlette.types import Receive

__all__ = ["cancel_on_disconnect"]


@asynccontextmanager
async def cancel_on_disconnect(receive: Receive) -> AsyncIterator[None]:
    """Run the block; if the client disconnects meanwhile, cancel it and raise ``ClientDisconnect``.

    Enter it only after the whole body has been received.
    """
    task = asyncio.current_task()
    assert task is not None
    gone = False
    active = True

    async def watch() -> None:
        nonlocal gone
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                break
        if active:
            gone = True
            task.cancel()

    watcher = asyncio.get_running_loop().create_task(watch())
    try:
        yield
    except asyncio.CancelledError:
        if gone and task.uncancel() == 0:
            raise ClientDisconnect() from None
        raise
    finally:
        active = False
        watcher.cancel()
