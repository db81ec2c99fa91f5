"""LitServe with its dynamic batching: the most direct peer.

Configured fairly for one machine: one inference worker (``workers_per_device=1``, ``devices=1``),
one API server process, the same torch threads as ours, batching on (``max_batch_size``,
``batch_timeout``). LitServe reads JSON or form bodies only, and a form's file cannot cross its
process queue (it pickles the request), so this peer takes ``{"image": "<base64>"}``, the pattern of
LitServe's own image examples; the harness sends it that way.
"""

# No "from __future__ import annotations": LitServe reads decode_request's annotation at run time.

import base64
from pathlib import Path
from typing import Any

import litserve as ls
import torch
from fastapi import Request
from torch import Tensor

from app.devices import load_engine_named
from app.engine import Engine
from bench.peers.args import peer_args


class ResNetAPI(ls.LitAPI):
    """decode (base64 JSON -> uint8 tensor), batch (stack), predict (forward), unbatch, encode (top-5)."""

    def __init__(
        self, checkpoint: str, device: str, precision: str, threads: int, channels_last: bool, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.checkpoint = checkpoint
        self.device = device  # ours: cpu, cuda:N or sim (LitServe's own is cpu or cuda)
        self.precision = precision
        self.threads = threads
        self.channels_last = channels_last
        self.model: Engine | None = None

    def setup(self, device: str) -> None:
        torch.set_num_threads(max(1, self.threads))
        name = device if self.device.startswith("cuda") else self.device
        self.model = load_engine_named(
            Path(self.checkpoint), name, precision=self.precision, channels_last=self.channels_last
        )
        self.model.warmup(1, autotune=False)

    def decode_request(self, request: Request) -> Tensor:  # type: ignore[override]
        # Annotated as Request, LitServe hands over the parsed JSON body (a dict).
        assert self.model is not None
        return self.model.preprocess(base64.b64decode(request["image"]))  # type: ignore[index]

    def batch(self, inputs: list[Tensor]) -> Tensor:
        return torch.stack(inputs)

    def predict(self, x: Tensor) -> Tensor:
        assert self.model is not None
        return self.model.predict(x if x.ndim == 4 else x.unsqueeze(0)).cpu()

    def unbatch(self, output: Tensor) -> list[Tensor]:
        return list(output.unsqueeze(1))

    def encode_response(self, output: Tensor) -> dict[str, Any]:
        assert self.model is not None
        return {"predictions": self.model.postprocess(output.reshape(1, -1), [5])[0]}


def main() -> None:
    """Serve until killed."""
    args = peer_args("litserve_app", __doc__ or "").parse_args()
    api = ResNetAPI(
        args.checkpoint,
        args.device,
        args.precision,
        args.threads,
        args.channels_last,
        max_batch_size=args.max_batch_size,
        batch_timeout=args.batch_timeout_ms / 1000,
    )
    accelerator = "cuda" if args.device.startswith("cuda") else "cpu"
    server = ls.LitServer(api, accelerator=accelerator, devices=1, workers_per_device=1, timeout=120)
    server.run(host=args.host, port=args.port, num_api_servers=1, log_level="warning", generate_client_file=False)


if __name__ == "__main__":
    main()
