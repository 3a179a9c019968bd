"""schemathesis against the app's own /openapi.json: no 5xx, and every answer is documented."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import schemathesis
from flask import Flask
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode, checks
from schemathesis.core.result import Ok

from tests.helpers import settings_for, stores_of
from wickson_batch import create_app
from wickson_batch.services import keys

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

# Examples per operation and generation mode: enough to find the usual holes, fast in CI.
EXAMPLES = 25

# The built-in checks, looked up by name (schemathesis registers them on `checks`).
CHECKS = [
    getattr(checks, name)
    for name in (
        "not_a_server_error",
        "status_code_conformance",
        "content_type_conformance",
        "response_headers_conformance",
        "response_schema_conformance",
    )
]


@pytest.fixture
def fuzz_app(tmp_path: Path) -> Iterator[Flask]:
    # One engine is enough here: the fuzzer exercises the HTTP contract, and the engines
    # behave the same behind it (the API suites run on both).
    app = create_app(settings_for(tmp_path, "qdrant-local", AUTH_FAILURE_LIMIT="100000/minute"))
    yield app
    stores_of(app).close()


@pytest.fixture
def fuzz_key(fuzz_app: Flask) -> str:
    _, secret = keys.create_key(stores_of(fuzz_app).db, owner="fuzzer")
    return secret


def closing(app: Flask) -> WSGIApplication:
    """Wrap `app` so every response body is read and closed before it is handed back.

    schemathesis' WSGI transport reads a body without closing it; a static file served by
    /docs would then stay open and fail the suite with a ResourceWarning.
    """

    def application(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        chunks = app(environ, start_response)
        try:
            return [b"".join(chunks)]
        finally:
            getattr(chunks, "close", lambda: None)()

    return application


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_every_operation_answers_as_documented(
    fuzz_app: Flask, fuzz_key: str, mode: GenerationMode
) -> None:
    # Built per test rather than with schemathesis' pytest plugin, whose lazy fixture
    # loader does not run on this pytest.
    schema = schemathesis.openapi.from_wsgi("/openapi.json", closing(fuzz_app))
    operations = []
    for result in schema.get_all_operations():
        assert isinstance(result, Ok), result.err()  # the document itself must be valid
        operations.append(result.ok())
    assert len(operations) >= 8

    statuses: dict[str, set[int]] = {}
    if mode == GenerationMode.NEGATIVE:
        # Invalid input needs a body to break: a path parameter is a string whatever it holds.
        operations = [operation for operation in operations if list(operation.body)]
        assert len(operations) == 5
    for operation in operations:

        @given(case=operation.as_strategy(mode, headers={"X-Api-Key": fuzz_key}))
        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            database=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
        )
        def answers_as_documented(case: schemathesis.Case[Any]) -> None:
            response = case.call_and_validate(checks=CHECKS)
            statuses.setdefault(case.operation.label, set()).add(response.status_code)

        answers_as_documented()

    # The key was sent and accepted: the fuzzer reached past authentication.
    assert not any(401 in seen or 403 in seen for seen in statuses.values()), statuses
    if mode == GenerationMode.POSITIVE:
        assert 200 in statuses["DELETE /v1/media/batch"]
        assert 200 in statuses["POST /v1/media/batch/delete"]
