"""``ResNetClient`` and ``AsyncResNetClient``: the service's endpoints as typed calls, on httpx.

Both share everything but the I/O: what a request sends is built, and what its answer means is read, by
the module's functions. A 503 (queue full, not ready) is retried after the server's ``Retry-After``
(capped at ``max_retry_delay``), and a failure to connect after a short backoff, up to ``max_attempts``
tries in all; nothing else is retried, since a request that reached the server may have been served.
"""

from __future__ import annotations

import asyncio
import email.utils
import mimetypes
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx

from client.errors import ServerError, TransportError, Unreachable
from client.results import ModelInfo, ModelList, PredictResult, Readiness

__all__ = ["DEFAULT_URL", "ImageInput", "ResNetClient", "AsyncResNetClient", "parse_retry_after"]

DEFAULT_URL = "http://127.0.0.1:8000"

#: An image: its bytes, or the path of its file.
ImageInput = bytes | Path | str

#: Failures before a request was sent, so safe to retry.
_CONNECT_ERRORS = (httpx.ConnectError, httpx.ConnectTimeout)


def parse_retry_after(value: str | None) -> float | None:
    """A ``Retry-After`` header in seconds (delay-seconds or an HTTP date); ``None`` when absent or invalid."""
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def _file_part(image: ImageInput, index: int = 0) -> tuple[str, bytes, str]:
    """``(filename, bytes, content type)`` of a multipart part: the file's guessed ``image/*`` type, else octets."""
    if isinstance(image, bytes):
        return f"image-{index}", image, "application/octet-stream"
    path = Path(image)
    guessed, _ = mimetypes.guess_type(path.name)
    content_type = guessed if guessed and guessed.startswith("image/") else "application/octet-stream"
    return path.name, path.read_bytes(), content_type


def _query(model: str | None, top_k: int) -> dict[str, str | int]:
    return {"top_k": top_k} if model is None else {"model": model, "top_k": top_k}


def _json(response: httpx.Response) -> Any:
    """The body of a successful answer; ``ServerError`` for any other."""
    if response.is_success:
        return response.json()
    try:
        body = response.json()
    except ValueError:
        body = None
    fallback = response.text.strip()[:200] or response.reason_phrase
    retry_after = parse_retry_after(response.headers.get("retry-after"))
    raise ServerError(response.status_code, ServerError.detail_of(body, fallback), retry_after)


def _probe(response: httpx.Response) -> tuple[bool, Any]:
    """``/health`` and ``/ready``: 200 or 503, and the body; ``ServerError`` for anything else."""
    if response.status_code != 503:
        return True, _json(response)
    try:
        return False, response.json()
    except ValueError:
        return False, None


def _readiness(response: httpx.Response) -> Readiness:
    ready, body = _probe(response)
    if ready:
        return Readiness(ready=True, models=tuple(body.get("models", ())))
    return Readiness(ready=False, detail=ServerError.detail_of(body, "not ready"))


def _batch(response: httpx.Response) -> list[PredictResult]:
    return [PredictResult.from_json(r) for r in _json(response)["results"]]


class _Base:
    """Settings shared by both clients."""

    def __init__(
        self,
        base_url: str = DEFAULT_URL,
        *,
        api_key: str | None = None,
        timeout: float = 30.0,
        max_attempts: int = 4,
        max_retry_delay: float = 30.0,
        connect_backoff: float = 0.25,
    ) -> None:
        if max_attempts < 1:
            raise ValueError(f"max_attempts must be at least 1, got {max_attempts}")
        self.base_url = base_url.rstrip("/")
        self.api_key = api_key
        self.timeout = timeout
        self.max_attempts = max_attempts
        self.max_retry_delay = max_retry_delay
        self.connect_backoff = connect_backoff

    def _options(self) -> dict[str, Any]:
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        return {"base_url": self.base_url, "headers": headers, "timeout": self.timeout}

    def _delay(self, attempt: int, retry_after: float | None) -> float:
        """Seconds to wait after failed ``attempt`` (1-based): the server's ``Retry-After``, else a doubling backoff."""
        wanted = retry_after if retry_after is not None else self.connect_backoff * 2 ** (attempt - 1)
        return min(wanted, self.max_retry_delay)

    def _next_delay(self, attempt: int, outcome: httpx.Response | Exception, retry_503: bool) -> float | None:
        """How long to wait before retrying, or ``None`` to stop here (raise the error, or return the answer)."""
        if attempt >= self.max_attempts:
            return None
        if isinstance(outcome, Exception):
            return self._delay(attempt, None) if isinstance(outcome, _CONNECT_ERRORS) else None
        if outcome.status_code == 503 and retry_503:
            return self._delay(attempt, parse_retry_after(outcome.headers.get("retry-after")))
        return None

    def _final(self, outcome: httpx.Response | Exception) -> httpx.Response:
        """The answer to return once no retry is left: the response, or the transport error raised."""
        if isinstance(outcome, Exception):
            raise self._transport_error(outcome) from outcome
        return outcome

    def _transport_error(self, exc: Exception) -> TransportError:
        if isinstance(exc, _CONNECT_ERRORS):
            return Unreachable(f"cannot connect to {self.base_url}: {exc or type(exc).__name__}")
        if isinstance(exc, httpx.TimeoutException):
            return TransportError(f"no answer from {self.base_url} within {self.timeout:g} s")
        return TransportError(f"{type(exc).__name__} talking to {self.base_url}: {exc}")


class ResNetClient(_Base):
    """The service's endpoints, blocking. Use as a context manager, or ``close()`` it.

    ``transport`` is handed to ``httpx.Client`` (e.g. ``httpx.MockTransport`` in tests).
    """

    def __init__(self, base_url: str = DEFAULT_URL, *, transport: httpx.BaseTransport | None = None, **kwargs: Any):
        super().__init__(base_url, **kwargs)
        self._http = httpx.Client(transport=transport, **self._options())

    def __enter__(self) -> ResNetClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _send(self, method: str, path: str, *, retry_503: bool = True, **kwargs: Any) -> httpx.Response:
        attempt = 0
        while True:
            attempt += 1
            outcome: httpx.Response | Exception
            try:
                outcome = self._http.request(method, path, **kwargs)
            except httpx.TransportError as exc:
                outcome = exc
            delay = self._next_delay(attempt, outcome, retry_503)
            if delay is None:
                return self._final(outcome)
            time.sleep(delay)

    def predict(self, image: ImageInput, model: str | None = None, top_k: int = 5) -> PredictResult:
        """Classify one image (bytes, or a file's path); ``model`` ``None`` is the server's default."""
        files = {"file": _file_part(image)}
        return PredictResult.from_json(_json(self._send("POST", "/predict", params=_query(model, top_k), files=files)))

    def predict_batch(
        self, images: Sequence[ImageInput], model: str | None = None, top_k: int = 5
    ) -> list[PredictResult]:
        """Classify several images in one request (at most the server's ``--max-batch-files``), in order."""
        files = [("files", _file_part(image, i)) for i, image in enumerate(images)]
        return _batch(self._send("POST", "/predict/batch", params=_query(model, top_k), files=files))

    def models(self) -> ModelList:
        """``GET /models``."""
        return ModelList.from_json(_json(self._send("GET", "/models")))

    def model(self, name: str) -> ModelInfo:
        """``GET /models/{name}``."""
        return ModelInfo.from_json(_json(self._send("GET", f"/models/{quote(name, safe='')}")))

    def health(self) -> bool:
        """``GET /health``: whether the server is alive (``False``: a batch is stuck)."""
        return _probe(self._send("GET", "/health", retry_503=False))[0]

    def ready(self) -> Readiness:
        """``GET /ready``: whether every model is loaded and warm."""
        return _readiness(self._send("GET", "/ready", retry_503=False))


class AsyncResNetClient(_Base):
    """The service's endpoints, for asyncio: the same calls as ``ResNetClient``, awaited.

    Use as an async context manager, or ``await aclose()``; ``transport`` is handed to ``httpx.AsyncClient``.
    """

    def __init__(
        self, base_url: str = DEFAULT_URL, *, transport: httpx.AsyncBaseTransport | None = None, **kwargs: Any
    ):
        super().__init__(base_url, **kwargs)
        self._http = httpx.AsyncClient(transport=transport, **self._options())

    async def __aenter__(self) -> AsyncResNetClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _send(self, method: str, path: str, *, retry_503: bool = True, **kwargs: Any) -> httpx.Response:
        attempt = 0
        while True:
            attempt += 1
            outcome: httpx.Response | Exception
            try:
                outcome = await self._http.request(method, path, **kwargs)
            except httpx.TransportError as exc:
                outcome = exc
            delay = self._next_delay(attempt, outcome, retry_503)
            if delay is None:
                return self._final(outcome)
            await asyncio.sleep(delay)

    async def predict(self, image: ImageInput, model: str | None = None, top_k: int = 5) -> PredictResult:
        """Classify one image (bytes, or a file's path); ``model`` ``None`` is the server's default."""
        files = {"file": _file_part(image)}
        response = await self._send("POST", "/predict", params=_query(model, top_k), files=files)
        return PredictResult.from_json(_json(response))

    async def predict_batch(
        self, images: Sequence[ImageInput], model: str | None = None, top_k: int = 5
    ) -> list[PredictResult]:
        """Classify several images in one request (at most the server's ``--max-batch-files``), in order."""
        files = [("files", _file_part(image, i)) for i, image in enumerate(images)]
        return _batch(await self._send("POST", "/predict/batch", params=_query(model, top_k), files=files))

    async def models(self) -> ModelList:
        """``GET /models``."""
        return ModelList.from_json(_json(await self._send("GET", "/models")))

    async def model(self, name: str) -> ModelInfo:
        """``GET /models/{name}``."""
        return ModelInfo.from_json(_json(await self._send("GET", f"/models/{quote(name, safe='')}")))

    async def health(self) -> bool:
        """``GET /health``: whether the server is alive (``False``: a batch is stuck)."""
        return _probe(await self._send("GET", "/health", retry_503=False))[0]

    async def ready(self) -> Readiness:
        """``GET /ready``: whether every model is loaded and warm."""
        return _readiness(await self._send("GET", "/ready", retry_503=False))
