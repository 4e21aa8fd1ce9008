"""`semid.serve.api` against its own OpenAPI schema (schemathesis): generated requests never get a 5xx.

Valid requests (``positive``) and requests that break the schema (``negative``) for every operation,
sent in-process to the ASGI app; each response must be no server error and, for valid requests, conform
to the documented status codes and response schema.
"""

from __future__ import annotations

import pytest

schemathesis = pytest.importorskip("schemathesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from schemathesis import GenerationMode  # noqa: E402
from schemathesis.checks import not_a_server_error  # noqa: E402
from schemathesis.specs.openapi.checks import (  # noqa: E402
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from conftest import WordHashEmbedder  # noqa: E402
from semid.serve.api import create_app  # noqa: E402
from semid.serve.service import Service  # noqa: E402

OPERATIONS = [
    ("/recommend", "POST"),
    ("/search", "POST"),
    ("/items/{item_id}", "GET"),
    ("/ids/{semantic_id}", "GET"),
    ("/prefixes/{prefix}", "GET"),
    ("/health", "GET"),
    ("/version", "GET"),
]


@pytest.fixture(scope="module")
def api_schema(serve_dir, one_torch_thread):
    app = create_app(Service.load(serve_dir, embedder=WordHashEmbedder()), ui=False)
    return schemathesis.openapi.from_asgi("/openapi.json", app)


CASES = [
    pytest.param(path, method, mode, id=f"{method} {path} {mode.value}")
    for path, method in OPERATIONS
    for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
    if mode is GenerationMode.POSITIVE or "{" in path or method == "POST"  # no invalid GET /health
]


@pytest.mark.parametrize(("path", "method", "mode"), CASES)
def test_generated_requests_get_no_server_error(api_schema, path, method, mode):
    operation = api_schema[path][method]
    checks = [not_a_server_error]
    if mode is GenerationMode.POSITIVE:  # a valid request gets a documented status and body
        checks += [status_code_conformance, content_type_conformance, response_schema_conformance]
    statuses = []

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    def check(case):
        response = case.call()
        statuses.append(response.status_code)
        assert response.status_code < 500, (case.body, case.path_parameters, response.text)
        case.validate_response(response, checks=checks)

    check()
    assert statuses and max(statuses) < 500
