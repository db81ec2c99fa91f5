"""app.uploads: raw and multipart bodies, the byte limit while streaming, content types, field names.

``read_images`` runs behind a real FastAPI app (with the service's error handlers) driven through
``httpx.ASGITransport``, so the request body really arrives as ASGI ``http.request`` messages.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import FastAPI, Request

from app.admission import ByteBudget, UploadPace
from app.errors import install_error_handlers
from app.uploads import BodyReader, _is_image_type, read_images

LIMIT = 1000  # bytes
MAX_FILES = 3


def make_app(budget: ByteBudget, deadline_s: float = 30.0) -> FastAPI:
    app = FastAPI()
    install_error_handlers(app)

    def describe(images: list[bytes]) -> dict[str, list]:
        return {"sizes": [len(i) for i in images], "sha256": [hashlib.sha256(i).hexdigest() for i in images]}

    def reader(request: Request) -> BodyReader:
        now = time.monotonic()
        return BodyReader(request, limit=LIMIT, budget=budget, pace=UploadPace(now, now + deadline_s, 0.0, 0.0))

    @app.post("/one")
    async def one(request: Request) -> dict[str, list]:
        with reader(request) as body:
            return describe(await read_images(request, body, field="file"))

    @app.post("/many")
    async def many(request: Request) -> dict[str, list]:
        with reader(request) as body:
            return describe(await read_images(request, body, field="files", max_files=MAX_FILES))

    return app


def post(path: str, budget: ByteBudget | None = None, deadline_s: float = 30.0, **kwargs) -> httpx.Response:
    budget = budget or ByteBudget(10 * LIMIT)

    async def main() -> httpx.Response:
        transport = httpx.ASGITransport(app=make_app(budget, deadline_s), raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            return await client.post(path, **kwargs)

    response = asyncio.run(main())
    assert budget.in_use == 0, "the request ended without returning its bytes to the budget"
    return response


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def payload(n: int, seed: int = 0) -> bytes:
    """``n`` bytes that differ from one position (and seed) to the next, so a reordering shows."""
    return bytes((i * 7 + seed) % 251 for i in range(n))


class Chunks:
    """An async request body that records how many of its chunks the app pulled; with ``stall``, it then
    sends nothing more, ever."""

    def __init__(self, chunks: list[bytes], stall: bool = False) -> None:
        self.chunks, self.pulled, self.stall = chunks, 0, stall

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for chunk in self.chunks:
            self.pulled += 1
            yield chunk
        if self.stall:
            await asyncio.Event().wait()

    def whole(self) -> bytes:
        return b"".join(self.chunks)


def data_chunks(count: int, size: int) -> list[bytes]:
    return [payload(size, seed=i) for i in range(count)]


def multipart(parts: list[tuple[str, str, str | None, bytes]], boundary: str = "b0undary") -> tuple[bytes, str]:
    """A hand-built multipart body of ``(field, filename, content type or None, data)`` parts."""
    body = b""
    for field, filename, content_type, data in parts:
        body += f'--{boundary}\r\nContent-Disposition: form-data; name="{field}"; filename="{filename}"\r\n'.encode()
        if content_type is not None:
            body += f"Content-Type: {content_type}\r\n".encode()
        body += b"\r\n" + data + b"\r\n"
    body += f"--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


# --- raw bodies -------------------------------------------------------------------------------


@pytest.mark.parametrize("content_type", ["image/png", "image/jpeg; q=1", "IMAGE/WEBP", "application/octet-stream"])
def test_raw_image_or_octet_stream_body_is_returned_whole(content_type: str) -> None:
    data = payload(700)
    r = post("/one", content=data, headers={"content-type": content_type})
    assert r.status_code == 200, r.text
    assert r.json() == {"sizes": [700], "sha256": [sha(data)]}


def test_a_body_of_exactly_the_limit_is_accepted() -> None:
    data = payload(LIMIT)
    r = post("/one", content=data, headers={"content-type": "image/png"})
    assert r.status_code == 200, r.text
    assert r.json()["sizes"] == [LIMIT]


def test_a_chunked_body_within_the_limit_is_joined_in_order() -> None:
    body = Chunks(data_chunks(5, 150))
    r = post("/one", content=body, headers={"content-type": "image/png"})
    assert r.status_code == 200, r.text
    assert r.json() == {"sizes": [750], "sha256": [sha(body.whole())]}


@pytest.mark.parametrize("content_type", ["text/plain", "application/json", "imagefoo/png"])
def test_a_non_image_body_is_415_naming_its_type(content_type: str) -> None:
    r = post("/one", content=b"hello", headers={"content-type": content_type})
    assert r.status_code == 415, r.text
    detail = r.json()["detail"]
    assert repr(content_type) in detail and "multipart/form-data" in detail


def test_a_body_without_a_content_type_is_415() -> None:
    r = post("/one", content=payload(10))  # httpx sends no content type for raw bytes
    assert r.status_code == 415, r.text
    assert "'none'" in r.json()["detail"]


# --- size limit -------------------------------------------------------------------------------


@pytest.mark.parametrize("content_type", ["image/png", "multipart/form-data; boundary=b0undary"])
def test_a_declared_content_length_over_the_limit_is_413_before_any_byte_is_read(content_type: str) -> None:
    body = Chunks(data_chunks(10, 500))
    r = post("/one", content=body, headers={"content-type": content_type, "content-length": "5000"})
    assert r.status_code == 413, r.text
    assert r.json()["detail"] == f"body of 5000 bytes exceeds the {LIMIT} byte limit (--max-upload-mb)"
    assert body.pulled == 0, "the body was read although its Content-Length already said it was too large"


@pytest.mark.parametrize("kind", ["raw", "multipart"])
def test_a_streamed_body_that_grows_past_the_limit_is_413_without_reading_the_rest(kind: str) -> None:
    if kind == "raw":
        head, content_type = [], "image/png"
    else:  # a well-formed start of a file part, whose data then never ends
        start, content_type = multipart([("file", "a.png", "image/png", b"")])
        head = [start[: start.index(b"\r\n\r\n") + 4]]
    body = Chunks([*head, *data_chunks(100, 300)])  # no Content-Length: sent chunked
    crossing = next(n for n in range(1, len(body.chunks) + 1) if len(b"".join(body.chunks[:n])) > LIMIT)
    r = post("/one", content=body, headers={"content-type": content_type})
    assert r.status_code == 413, r.text
    assert r.json()["detail"] == f"body exceeds the {LIMIT} byte limit (--max-upload-mb)"
    assert body.pulled == crossing, f"pulled {body.pulled} chunks; chunk {crossing} is the one over the limit"


# --- byte budget and pace ---------------------------------------------------------------------


def test_a_declared_body_the_budget_cannot_cover_is_503_before_any_byte_is_read() -> None:
    budget = ByteBudget(LIMIT // 2)
    body = Chunks(data_chunks(2, 300))
    r = post("/one", budget, content=body, headers={"content-type": "image/png", "content-length": "600"})
    assert r.status_code == 503 and r.headers["retry-after"] == "1", r.text
    assert "request bodies" in r.json()["detail"]
    assert body.pulled == 0


def test_a_chunked_body_takes_budget_as_it_arrives_and_is_503_once_past_it() -> None:
    budget = ByteBudget(500)
    body = Chunks(data_chunks(4, 200))  # no Content-Length
    r = post("/one", budget, content=body, headers={"content-type": "image/png"})
    assert r.status_code == 503, r.text
    assert body.pulled == 3  # 600 bytes > 500: refused at the third chunk
    assert post("/one", budget, content=Chunks(data_chunks(2, 200)), headers={"content-type": "image/png"}).is_success


@pytest.mark.parametrize("kind", ["raw", "multipart"])
def test_a_body_that_stalls_is_408_and_the_connection_is_closed(kind: str) -> None:
    if kind == "raw":
        head, content_type = [payload(300)], "image/png"
    else:
        start, content_type = multipart([("file", "a.png", "image/png", b"")])
        head = [start[: start.index(b"\r\n\r\n") + 4], payload(300)]
    r = post("/one", deadline_s=0.3, content=Chunks(head, stall=True), headers={"content-type": content_type})
    assert r.status_code == 408, r.text
    assert r.headers["connection"] == "close"
    assert f"{sum(map(len, head))} bytes received" in r.json()["detail"]


def test_the_pace_asks_for_the_minimum_rate_after_the_grace_period_and_everything_by_the_deadline() -> None:
    pace = UploadPace(started=100.0, deadline=130.0, grace_s=5.0, min_rate=1000.0)
    assert pace.next_by(0) == pytest.approx(105.001)
    assert pace.next_by(9_999) == pytest.approx(115.0)  # 10 kB must be in by 5 s + 10 s
    assert pace.next_by(10**6) == 130.0  # never later than the deadline
    assert UploadPace(100.0, 130.0, 5.0, 0.0).next_by(0) == 130.0  # no rate: the deadline only


# --- multipart --------------------------------------------------------------------------------


def test_multipart_single_file_field() -> None:
    data = payload(600)
    r = post("/one", files={"file": ("a.png", data, "image/png")})
    assert r.status_code == 200, r.text
    assert r.json() == {"sizes": [600], "sha256": [sha(data)]}


def test_multipart_part_without_a_content_type_is_accepted() -> None:
    data = payload(300)
    body, content_type = multipart([("file", "a.bin", None, data)])
    r = post("/one", content=body, headers={"content-type": content_type})
    assert r.status_code == 200, r.text
    assert r.json()["sha256"] == [sha(data)]


@pytest.mark.parametrize("count", [1, MAX_FILES])
def test_multipart_several_files_up_to_max_files_in_upload_order(count: int) -> None:
    images = [payload(100 + 10 * i, seed=i) for i in range(count)]
    files = [("files", (f"{i}.png", data, "image/png")) for i, data in enumerate(images)]
    r = post("/many", files=files)
    assert r.status_code == 200, r.text
    assert r.json() == {"sizes": [len(d) for d in images], "sha256": [sha(d) for d in images]}


def test_multipart_more_than_max_files_is_400() -> None:
    files = [("files", (f"{i}.png", payload(50, seed=i), "image/png")) for i in range(MAX_FILES + 1)]
    r = post("/many", files=files)
    assert r.status_code == 400, r.text
    detail = r.json()["detail"]
    assert detail.startswith("malformed multipart body: ") and f"Maximum number of files is {MAX_FILES}" in detail


def test_multipart_without_the_expected_field_is_400_naming_it() -> None:
    r = post("/one", files={"image": ("a.png", payload(100), "image/png")})
    assert r.status_code == 400, r.text
    assert r.json()["detail"] == "multipart body has no 'file' file field"
    r = post("/many", files={"file": ("a.png", payload(100), "image/png")})
    assert r.status_code == 400, r.text
    assert r.json()["detail"] == "multipart body has no 'files' file field"


def test_multipart_field_sent_as_text_not_as_a_file_is_400() -> None:
    r = post("/one", data={"file": "not a file"}, files={"other": ("a.png", payload(10), "image/png")})
    assert r.status_code == 400, r.text
    assert r.json()["detail"] == "multipart body has no 'file' file field"


@pytest.mark.parametrize(("path", "field"), [("/one", "file"), ("/many", "files")])
def test_multipart_text_part_is_415_naming_the_part(path: str, field: str) -> None:
    files = [(field, ("notes.txt", b"hello", "text/plain"))]
    if field == "files":  # a text part among images is refused too
        files.insert(0, (field, ("a.png", payload(10), "image/png")))
    r = post(path, files=files)
    assert r.status_code == 415, r.text
    assert r.json()["detail"] == "part 'notes.txt' is text/plain; send an image/* file"


def test_multipart_with_a_boundary_that_does_not_match_the_body_is_400() -> None:
    body, _ = multipart([("file", "a.png", "image/png", payload(100))], boundary="actual")
    r = post("/one", content=body, headers={"content-type": "multipart/form-data; boundary=declared"})
    assert r.status_code == 400, r.text
    assert r.json()["detail"] == "malformed multipart body: Invalid multipart data."


def test_multipart_without_a_boundary_is_400() -> None:
    body, _ = multipart([("file", "a.png", "image/png", payload(100))])
    r = post("/one", content=body, headers={"content-type": "multipart/form-data"})
    assert r.status_code == 400, r.text
    assert r.json()["detail"] == "malformed multipart body: Missing boundary in multipart."


# --- content type check -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content_type", "expected"),
    [
        ("image/png", True),
        ("Image/JPEG; charset=binary", True),
        (" image/webp ", True),
        ("application/octet-stream", True),
        ("application/octet-stream; x=1", True),
        ("text/plain", False),
        ("application/json", False),
        ("imagefoo/png", False),
        ("multipart/form-data; boundary=x", False),
        ("", False),
        (None, False),
    ],
)
def test_is_image_type(content_type: str | None, expected: bool) -> None:
    assert _is_image_type(content_type) is expected
