"""The flags every peer takes, so the harness starts each with the same model and thread settings."""

from __future__ import annotations

import argparse

from models.device import PRECISIONS

__all__ = ["peer_args"]


def peer_args(prog: str, description: str) -> argparse.ArgumentParser:
    """``--checkpoint --host --port --device --precision --threads [--channels-last]``."""
    p = argparse.ArgumentParser(prog=prog, description=description)
    p.add_argument("--checkpoint", required=True, help="our .safetensors checkpoint")
    p.add_argument("--host", default="127.0.0.1", help="interface to bind; default 127.0.0.1")
    p.add_argument("--port", type=int, required=True, help="TCP port")
    p.add_argument("--device", default="cpu", help="cpu, cuda or sim; default cpu")
    p.add_argument("--precision", default="fp32", choices=PRECISIONS, help="default fp32")
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads; default 1")
    p.add_argument(
        "--channels-last", action=argparse.BooleanOptionalAction, default=True, help="memory format; default on"
    )
    p.add_argument("--max-batch-size", type=int, default=8, help="batching peers only; default 8")
    p.add_argument("--batch-timeout-ms", type=float, default=5.0, help="batching peers only; default 5 ms")
    return p
