"""The tutorial server: FastAPI, one forward per request, no batching.

``POST /predict`` takes a raw ``image/*`` body or a multipart ``file`` field and answers the top-5
labels. The handler is ``async`` and runs decode and forward inline, one request at a time: the shape
most FastAPI tutorials ship, and on a small CPU kinder than a sync handler (which would run up to 40
forwards at once in Starlette's thread pool, each with all the torch threads).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import uvicorn
from fastapi import FastAPI, Request
from starlette.datastructures import UploadFile

from app.devices import load_engine_named
from bench.peers.args import peer_args


def create_app(checkpoint: str, device: str, precision: str, threads: int, channels_last: bool) -> FastAPI:
    """The app with its model loaded and warmed up (batch 1)."""
    torch.set_num_threads(max(1, threads))
    model = load_engine_named(Path(checkpoint), device, precision=precision, channels_last=channels_last)
    model.warmup(1, autotune=False)
    app = FastAPI(title="plain FastAPI peer")

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.post("/predict")
    async def predict(request: Request) -> dict[str, Any]:
        if request.headers.get("content-type", "").startswith("multipart/form-data"):
            form = await request.form()
            upload = form["file"]
            assert isinstance(upload, UploadFile)
            data = await upload.read()
        else:
            data = await request.body()
        probs = model.predict(model.preprocess(data).unsqueeze(0))
        return {"predictions": model.postprocess(probs, [5])[0]}

    return app


def main() -> None:
    """Serve until killed."""
    args = peer_args("plain_fastapi", __doc__ or "").parse_args()
    app = create_app(args.checkpoint, args.device, args.precision, args.threads, args.channels_last)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
