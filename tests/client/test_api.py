"""``client.api`` against ``httpx.MockTransport``: what a request sends, retries on 503 and connect errors, errors.

The real server is in tests/e2e/test_client.py; here the answers are scripted, to count attempts.
"""

from __future__ import annotations

import asyncio
import email.utils
import time
from collections.abc import Callable

import httpx
import pytest

from client import AsyncResNetClient, PredictResult, ResNetClient, ServerError, TransportError, Unreachable
from client.api import parse_retry_after

URL = "http://resnet.test"
ANSWER = {"model": "m", "predictions": [{"label": "Shirt", "index": 6, "score": 0.9}]}


def scripted(*responses: httpx.Response | Exception) -> tuple[Callable[[httpx.Request], httpx.Response], list]:
    """A MockTransport handler answering ``responses`` in turn (the last one repeated), and its requests."""
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        answer = responses[min(len(seen), len(responses)) - 1]
        if isinstance(answer, Exception):
            raise answer
        return answer

    return handler, seen


def busy(retry_after: str = "0") -> httpx.Response:
    return httpx.Response(503, json={"detail": "queue full"}, headers={"Retry-After": retry_after})


def test_predict_sends_the_file_query_and_key_and_returns_a_typed_result() -> None:
    handler, seen = scripted(httpx.Response(200, json={**ANSWER, "version": "abc"}))
    with ResNetClient(URL, api_key="k", transport=httpx.MockTransport(handler)) as api:
        result = api.predict(b"\x89PNG...", model="m", top_k=3)
    assert result == PredictResult.from_json({**ANSWER, "version": "abc"})
    assert result.top.label == "Shirt" and result.version == "abc"
    assert result.to_json() == {**ANSWER, "version": "abc"}
    request = seen[0]
    assert request.url.path == "/predict" and dict(request.url.params) == {"model": "m", "top_k": "3"}
    assert request.headers["authorization"] == "Bearer k"
    assert b'name="file"' in request.content and b"\x89PNG..." in request.content


def test_version_is_optional_and_left_out_of_the_json_when_absent() -> None:
    result = PredictResult.from_json(ANSWER)
    assert result.version is None and result.to_json() == ANSWER


def test_503_is_retried_after_retry_after_then_succeeds() -> None:
    handler, seen = scripted(busy(), busy(), httpx.Response(200, json=ANSWER))
    with ResNetClient(URL, transport=httpx.MockTransport(handler), max_attempts=3) as api:
        assert api.predict(b"x").top.index == 6
    assert len(seen) == 3


def test_503_gives_up_after_max_attempts() -> None:
    handler, seen = scripted(busy())
    with (
        ResNetClient(URL, transport=httpx.MockTransport(handler), max_attempts=3) as api,
        pytest.raises(ServerError) as err,
    ):
        api.predict(b"x")
    assert len(seen) == 3
    assert (err.value.status, err.value.detail, err.value.retry_after) == (503, "queue full", 0.0)


def test_retry_after_is_capped_by_max_retry_delay() -> None:
    handler, seen = scripted(busy("3600"), httpx.Response(200, json=ANSWER))
    start = time.monotonic()
    with ResNetClient(URL, transport=httpx.MockTransport(handler), max_retry_delay=0.01) as api:
        api.predict(b"x")
    assert len(seen) == 2 and time.monotonic() - start < 10


def test_connect_errors_are_retried_then_reported_as_unreachable() -> None:
    handler, seen = scripted(httpx.ConnectError("refused"))
    api = ResNetClient(URL, transport=httpx.MockTransport(handler), max_attempts=3, connect_backoff=0)
    with api, pytest.raises(Unreachable, match="cannot connect to http://resnet.test: refused"):
        api.predict(b"x")
    assert len(seen) == 3


def test_a_connect_error_then_an_answer_succeeds() -> None:
    handler, seen = scripted(httpx.ConnectError("refused"), httpx.Response(200, json=ANSWER))
    with ResNetClient(URL, transport=httpx.MockTransport(handler), connect_backoff=0) as api:
        assert api.predict(b"x").model == "m"
    assert len(seen) == 2


def test_errors_after_the_request_was_sent_are_not_retried() -> None:
    handler, seen = scripted(httpx.ReadTimeout("slow"))
    with (
        ResNetClient(URL, transport=httpx.MockTransport(handler), timeout=2) as api,
        pytest.raises(TransportError) as err,
    ):
        api.predict(b"x")
    assert len(seen) == 1 and not isinstance(err.value, Unreachable)
    assert str(err.value) == "no answer from http://resnet.test within 2 s"


@pytest.mark.parametrize(
    ("response", "detail"),
    [
        (httpx.Response(400, json={"detail": "cannot decode image"}), "cannot decode image"),
        (
            httpx.Response(422, json={"detail": [{"loc": ["query", "top_k"], "msg": "too small"}]}),
            "query.top_k: too small",
        ),
        (httpx.Response(502, text="Bad Gateway from the proxy"), "Bad Gateway from the proxy"),
    ],
)
def test_error_answers_raise_server_error_once(response: httpx.Response, detail: str) -> None:
    handler, seen = scripted(response)
    with ResNetClient(URL, transport=httpx.MockTransport(handler)) as api, pytest.raises(ServerError) as err:
        api.predict(b"x")
    assert (err.value.status, err.value.detail, len(seen)) == (response.status_code, detail, 1)
    assert str(err.value) == f"{response.status_code} {detail}"


def test_probes_are_not_retried_and_report_503_as_false() -> None:
    handler, seen = scripted(httpx.Response(503, json={"detail": "loading"}, headers={"Retry-After": "1"}))
    with ResNetClient(URL, transport=httpx.MockTransport(handler)) as api:
        readiness = api.ready()
        assert not api.health()
    assert not readiness.ready and readiness.detail == "loading" and len(seen) == 2


def test_async_client_retries_503_the_same_way() -> None:
    handler, seen = scripted(busy(), busy(), httpx.Response(200, json=ANSWER))

    async def run() -> PredictResult:
        async with AsyncResNetClient(URL, transport=httpx.MockTransport(handler), max_attempts=3) as api:
            return await api.predict(b"x", top_k=1)

    assert asyncio.run(run()).top.label == "Shirt"
    assert len(seen) == 3 and dict(seen[0].url.params) == {"top_k": "1"}


def test_async_client_gives_up_after_max_attempts() -> None:
    handler, seen = scripted(busy())

    async def run() -> None:
        async with AsyncResNetClient(URL, transport=httpx.MockTransport(handler), max_attempts=2) as api:
            await api.predict(b"x")

    with pytest.raises(ServerError, match="503 queue full"):
        asyncio.run(run())
    assert len(seen) == 2


def test_parse_retry_after() -> None:
    assert parse_retry_after(None) is None
    assert parse_retry_after("0") == 0.0 and parse_retry_after("2.5") == 2.5
    assert parse_retry_after("soon") is None
    later = email.utils.formatdate(time.time() + 60, usegmt=True)
    assert 50 < parse_retry_after(later) <= 60  # type: ignore[operator]
    assert parse_retry_after(email.utils.formatdate(0, usegmt=True)) == 0.0


def test_max_attempts_must_be_positive() -> None:
    with pytest.raises(ValueError, match="max_attempts"):
        ResNetClient(URL, max_attempts=0)
