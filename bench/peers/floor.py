"""The floor: a bare ASGI app on uvicorn that reads the request body and answers fixed JSON.

No framework, no parsing, no model: what the HTTP stack alone costs per request on this machine, with
the same uvicorn (uvloop, httptools) as our service. A served system's CPU per request divided by
this one's, measured in the same minutes, is what its own request path costs beyond HTTP.
"""

from __future__ import annotations

import argparse

import uvicorn
from starlette.types import Receive, Scope, Send

__all__ = ["app", "main"]

_BODY = b'{"model":"floor","predictions":[]}'
_HEADERS = [(b"content-type", b"application/json"), (b"content-length", str(len(_BODY)).encode())]


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    """Read the whole body of any HTTP request, answer 200 with fixed JSON."""
    if scope["type"] != "http":
        return
    more = True
    while more:
        message = await receive()
        more = message.get("more_body", False)
    await send({"type": "http.response.start", "status": 200, "headers": _HEADERS})
    await send({"type": "http.response.body", "body": _BODY})


def main() -> None:
    """Serve until killed."""
    p = argparse.ArgumentParser(prog="floor", description=__doc__)
    p.add_argument("--host", default="127.0.0.1", help="interface to bind; default 127.0.0.1")
    p.add_argument("--port", type=int, required=True, help="TCP port")
    args = p.parse_args()
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning", access_log=False, lifespan="off")


if __name__ == "__main__":
    main()
