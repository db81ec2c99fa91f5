"""Schemathesis against a real ``resnet-serve``'s own OpenAPI document: no 500, no response outside the contract.

Every operation of the live server's ``/openapi.json``, /predict and /predict/batch included, with
generated parameters and bodies, valid (positive) and invalid (negative); image bodies come from
tests/fuzz_images.py (valid or mutated images) beside schemathesis's own bytes. An API key is set and
sent; ``ignored_auth`` also sends requests without it. Checks: no server error; status code, content type
and body as documented. Examples per operation and mode: the hypothesis profile's (tests/conftest.py,
docs/fuzzing.md).

Not ``schemathesis.pytest.from_fixture``: its lazy loader sets ``Function._nodeid``, which pytest 9.2 no
longer has. The test ids come from the app's OpenAPI built in process; the cases from the live server's.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import schemathesis
from fuzz_images import images, mutated_images
from hypothesis import given
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    ignored_auth,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)
from serve_helpers import ServerProcess, metric_total

from app.main import create_app
from app.settings import Settings

API_KEY = "fuzz-key"
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    ignored_auth,
]

image_bytes = st.one_of(
    images().map(lambda image: image.data), mutated_images().map(lambda image: image.data), st.binary(max_size=256)
)
schemathesis.openapi.media_type("image/*", image_bytes)  # raw /predict bodies
schemathesis.openapi.format("binary", image_bytes)  # the multipart file fields


def operations() -> list[tuple[str, GenerationMode]]:
    """(``METHOD /path``, mode) for every operation the service documents (its OpenAPI needs no model): positive
    for each, negative for those with something to make invalid (parameters, a body, the API key)."""
    paths = create_app(Settings(weights_dir=Path("weights"))).openapi()["paths"]
    cases = []
    for path, item in paths.items():
        for method, operation in item.items():
            label = f"{method.upper()} {path}"
            cases.append((label, GenerationMode.POSITIVE))
            if {"parameters", "requestBody", "security"} & operation.keys():
                cases.append((label, GenerationMode.NEGATIVE))
    return cases


@pytest.fixture(scope="module")
def server(start_server, weights_dir: Path) -> ServerProcess:
    """A ready server with an API key."""
    server = start_server(
        ["--weights-dir", str(weights_dir), "--api-key", API_KEY, "--max-upload-mb", "1", "--torch-threads", "1"]
    )
    server.wait_ready()
    return server


@pytest.fixture(scope="module")
def api_schema(server: ServerProcess) -> schemathesis.BaseSchema:
    """The server's own OpenAPI document; cases from it are sent to that server."""
    return schemathesis.openapi.from_url(server.url + "/openapi.json")


@pytest.mark.parametrize(("label", "mode"), [pytest.param(*case, id=f"{case[0]} {case[1]}") for case in operations()])
def test_operation_conforms_to_its_openapi(api_schema: schemathesis.BaseSchema, label: str, mode: GenerationMode):
    operation = api_schema.find_operation_by_label(label)
    assert operation is not None, f"{label} is not in the live server's /openapi.json"

    @given(case=operation.as_strategy(generation_mode=mode))
    def conforms(case: schemathesis.Case) -> None:
        case.call_and_validate(headers={"Authorization": f"Bearer {API_KEY}"}, checks=CHECKS, timeout=60)

    conforms()


def test_fuzzed_server_is_up_and_counted_no_500(server: ServerProcess) -> None:
    """After the fuzzing above (pytest keeps a file's order): the process still runs, its metrics count no 500.

    Prints the requests it answered by route and status (``-s`` shows them: the counts in docs/fuzzing.md).
    """
    assert server.proc.poll() is None, server.log()
    text = server.get("/metrics").text
    print(*(line for line in text.splitlines() if line.startswith("resnet_serve_requests_total{")), sep="\n")
    assert metric_total(text, "resnet_serve_requests_total", status="500") == 0
