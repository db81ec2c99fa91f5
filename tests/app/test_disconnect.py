"""app.disconnect: a client that hangs up cancels its request's work; one that stays costs no task."""

from __future__ import annotations

import asyncio

import pytest
from starlette.requests import ClientDisconnect

from app.disconnect import DisconnectWatch


class Connection:
    """An ASGI ``receive`` after the body was read: nothing more until the client hangs up."""

    def __init__(self) -> None:
        self.hung_up = asyncio.Event()
        self.receives = 0

    async def receive(self) -> dict:
        self.receives += 1
        await self.hung_up.wait()
        return {"type": "http.disconnect"}


def test_a_hang_up_cancels_the_work_and_raises_client_disconnect() -> None:
    async def main() -> None:
        connection = Connection()
        work = asyncio.get_running_loop().create_future()  # e.g. a queued entry's result, never coming
        asyncio.get_running_loop().call_later(0.05, connection.hung_up.set)
        with pytest.raises(ClientDisconnect), DisconnectWatch(connection.receive, after_s=0.01):
            await work
        assert work.cancelled()
        assert asyncio.current_task().cancelling() == 0  # type: ignore[union-attr]  (nothing left pending)

    asyncio.run(main())


def test_work_done_before_the_watch_starts_never_reads_the_connection() -> None:
    async def main() -> None:
        connection = Connection()
        with DisconnectWatch(connection.receive, after_s=10):
            await asyncio.sleep(0)
        assert connection.receives == 0

    asyncio.run(main())


def test_a_cancellation_from_elsewhere_stays_a_cancellation() -> None:
    async def main() -> None:
        connection = Connection()

        async def request() -> None:
            with DisconnectWatch(connection.receive, after_s=0.01):
                await asyncio.Event().wait()

        task = asyncio.ensure_future(request())
        async with asyncio.timeout(5):
            while connection.receives == 0:  # until the watch has started
                await asyncio.sleep(0.005)
        task.cancel()  # e.g. the server shutting down
        with pytest.raises(asyncio.CancelledError):
            await task
        assert connection.receives == 1

    asyncio.run(main())
