"""``resnet-predict IMAGE_OR_DIR...``: classify image files (directories walked) with a running ``resnet-serve``.

Images are sent ``--concurrency`` at a time and printed in input order: a table row each, or with
``--json`` one ``/predict``-shaped object per line with a ``"file"`` key. A progress bar goes to stderr
when it is a terminal. Exit status: 0 when every image was classified; 1 when some were not (a one-line
error each on stderr, the others still printed) or when the server refused the request itself (wrong API
key, unknown model: one line); 2 for usage errors, no images, or a server that cannot be reached.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from tqdm import tqdm

from client.api import DEFAULT_URL, AsyncResNetClient
from client.errors import ClientError, ServerError, TransportError, Unreachable
from client.results import PredictResult

__all__ = ["main", "get_args_parser", "find_images", "IMAGE_SUFFIXES"]

PROG = "resnet-predict"

#: What a directory is searched for (a file named on the command line is sent whatever its suffix).
IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm"})

#: Answers about the request rather than the image: every image would get the same, so the run stops.
REQUEST_ERRORS = frozenset({401, 403, 404, 422})


class UsageError(Exception):
    """Nothing to send (exit status 2)."""


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description="Classify images with a running resnet-serve.")
    parser.add_argument("paths", nargs="+", type=Path, metavar="IMAGE_OR_DIR", help="image files or directories")
    parser.add_argument(
        "--url", default=os.environ.get("RESNET_SERVE_URL", DEFAULT_URL), help="server (env RESNET_SERVE_URL)"
    )
    parser.add_argument("--model", default=None, help="model name (default: the server's default model)")
    parser.add_argument("--top-k", type=_positive_int, default=5, help="classes per image (default 5)")
    parser.add_argument(
        "--api-key", default=os.environ.get("RESNET_SERVE_API_KEY"), help="bearer token (env RESNET_SERVE_API_KEY)"
    )
    parser.add_argument("--concurrency", type=_positive_int, default=8, help="requests in flight (default 8)")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds per request (default 30)")
    parser.add_argument("--max-attempts", type=_positive_int, default=4, help="tries per request on 503 (default 4)")
    parser.add_argument("--json", action="store_true", help="one /predict-shaped JSON object per line, with 'file'")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def find_images(paths: Sequence[Path]) -> list[Path]:
    """Files as given, directories' images (recursively, sorted), in argument order; ``UsageError`` if none."""
    images: list[Path] = []
    for path in paths:
        if path.is_dir():
            images += sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        elif path.exists():
            images.append(path)
        else:
            raise UsageError(f"{path}: no such file or directory")
    if not images:
        raise UsageError("no images found in " + " ".join(str(p) for p in paths))
    return images


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _row(path: Path, result: PredictResult, width: int) -> str:
    return f"{str(path):<{width}}  " + "  ".join(f"{p.label} {p.score:.3f}" for p in result.predictions)


def _json_line(path: Path, result: PredictResult) -> str:
    return json.dumps({"file": str(path), **result.to_json()})


def _stops_the_run(exc: Exception) -> bool:
    """Whether ``exc`` is about the request or the server rather than the image."""
    return isinstance(exc, Unreachable) or (isinstance(exc, ServerError) and exc.status in REQUEST_ERRORS)


def _error(message: str) -> None:
    tqdm.write(f"{PROG}: error: {_one_line(message)}", file=sys.stderr)


async def _predict_all(args: argparse.Namespace, images: list[Path]) -> int:
    """Classify ``images`` and print each in order; the number that failed. Request-wide errors propagate."""
    width = max(len(str(p)) for p in images)
    failed = 0
    show = len(images) > 1 and not args.no_progress and sys.stderr.isatty()
    client = AsyncResNetClient(args.url, api_key=args.api_key, timeout=args.timeout, max_attempts=args.max_attempts)
    async with client:
        with tqdm(total=len(images), unit="img", file=sys.stderr, disable=not show, leave=False) as bar:
            slots = asyncio.Semaphore(args.concurrency)

            async def predict(path: Path) -> PredictResult:
                async with slots:
                    try:
                        return await client.predict(path, model=args.model, top_k=args.top_k)
                    finally:
                        bar.update()

            tasks = [asyncio.ensure_future(predict(path)) for path in images]
            try:
                for path, task in zip(images, tasks, strict=True):
                    try:
                        result = await task
                    except (ServerError, TransportError, OSError) as exc:
                        if _stops_the_run(exc):
                            raise
                        failed += 1
                        _error(f"{path}: {exc.strerror or exc if isinstance(exc, OSError) else exc}")
                        continue
                    tqdm.write(_json_line(path, result) if args.json else _row(path, result, width), file=sys.stdout)
            finally:
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
    return failed


def main(argv: Sequence[str] | None = None) -> int:
    """The console script; returns the exit status."""
    args = get_args_parser().parse_args(argv)
    try:
        images = find_images(args.paths)
        failed = asyncio.run(_predict_all(args, images))
    except (UsageError, Unreachable) as exc:
        _error(str(exc))
        return 2
    except ClientError as exc:
        _error(str(exc))
        return 1
    except KeyboardInterrupt:
        return 130
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
