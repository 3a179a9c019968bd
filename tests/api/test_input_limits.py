"""Bodies, vectors and metadata: refused cheaply, exactly, and with small errors."""

from __future__ import annotations

import io
import json
from typing import Any

import pytest
from werkzeug.test import TestResponse

from tests.helpers import Caller, body, vector


def create(caller: Caller, payload: dict[str, Any]) -> TestResponse:
    return caller.client.post("/v1/media", json=payload, headers=caller.headers)


def assert_invalid(response: TestResponse, message: str, details: dict[str, Any]) -> None:
    assert response.status_code == 400
    payload = body(response)
    assert payload["error"]["code"] == "INVALID_REQUEST"
    assert payload["message"] == message
    payload["error"]["details"].pop("request_id")
    assert payload["error"]["details"] == details


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        pytest.param("1.0", "a vector holds JSON numbers only", id="numeric-string"),
        pytest.param(True, "a vector holds JSON numbers only", id="boolean"),
        pytest.param(None, "a vector holds JSON numbers only", id="null"),
        pytest.param(1e308, "a value is outside -1e+15..1e+15", id="beyond-float32"),
        pytest.param(10**400, "a value is outside -1e+15..1e+15", id="huge-integer"),
        pytest.param(-3.4e38, "a value is outside -1e+15..1e+15", id="norm-overflows-float32"),
    ],
)
def test_a_bad_value_in_a_vector_is_refused(alice: Caller, value: Any, problem: str) -> None:
    hd = [vector(8, 1), [1.0] * 7 + [value]]

    response = create(alice, {"hd_vectors": hd})

    assert_invalid(
        response, f"Invalid hd_vectors[1]: {problem}", {"field": "hd_vectors", "path": [1]}
    )


def test_a_vector_whose_norm_vanishes_in_float32_is_refused(alice: Caller) -> None:
    response = create(alice, {"ld_vectors": [[5e-324, 0, 1e-16, 0]]})

    assert_invalid(
        response,
        "Invalid ld_vectors[0]: a vector needs a value of magnitude 1e-15 or more "
        "(smaller ones vanish in 32-bit floats)",
        {"field": "ld_vectors", "path": [0]},
    )


def test_a_zero_vector_is_refused(alice: Caller) -> None:
    response = create(alice, {"ld_vectors": [[0, 0, 0, 0]]})

    assert_invalid(
        response,
        "Invalid ld_vectors[0]: a vector of zeros has no direction",
        {"field": "ld_vectors", "path": [0]},
    )


def test_an_oversized_vector_is_refused_by_its_size(alice: Caller) -> None:
    response = create(alice, {"hd_vectors": [[0.5] * 200_000]})

    assert_invalid(
        response,
        "Invalid hd_vectors[0]: has 200000 dimensions; this service stores 8",
        {"field": "hd_vectors", "path": [0]},
    )


def test_more_than_256_vectors_are_refused_before_reading_them(alice: Caller) -> None:
    response = create(alice, {"ld_vectors": [["not read"]] * 257})

    assert_invalid(
        response, "Invalid ld_vectors: at most 256 vectors per space", {"field": "ld_vectors"}
    )


def test_the_error_names_only_the_first_problem(alice: Caller) -> None:
    bad = [["x"] * 8 for _ in range(200)]

    response = create(alice, {"hd_vectors": bad})

    assert len(response.data) < 1000
    assert body(response)["error"]["details"]["path"] == [0]


def test_metadata_over_64_kib_is_refused(alice: Caller) -> None:
    response = create(alice, {"hd_vectors": [vector(8, 1)], "metadata": {"k": "x" * 70_000}})

    assert_invalid(
        response,
        "Invalid metadata: metadata is at most 65536 bytes of JSON",
        {"field": "metadata"},
    )


def test_integers_are_accepted_as_vector_values(alice: Caller) -> None:
    response = create(alice, {"hd_vectors": [[1, 2, 3, 4, 5, 6, 7, 8]]})

    assert response.status_code == 201


def test_search_refuses_a_string_in_its_vector(alice: Caller) -> None:
    payload = {"vector": [1.0] * 7 + ["1"], "space": "hd"}

    response = alice.client.post("/v1/media/search", json=payload, headers=alice.headers)

    assert_invalid(
        response, "Invalid vector: a vector holds JSON numbers only", {"field": "vector"}
    )


def streamed(caller: Caller, data: bytes) -> TestResponse:
    """Send a body without Content-Length, as a chunked upload arrives through a server."""
    return caller.client.open(
        "/v1/media/batch",
        method="DELETE",
        input_stream=io.BytesIO(data),
        headers={**caller.headers, "Content-Type": "application/json"},
        environ_overrides={"wsgi.input_terminated": True},
    )


def test_a_streamed_body_over_the_limit_is_refused(alice: Caller) -> None:
    media_id = alice.create()
    data = json.dumps({"media_ids": [media_id]}).encode() + b" " * (2 * 1024 * 1024)

    response = streamed(alice, data)

    assert response.status_code == 413
    assert body(response)["error"]["code"] == "PAYLOAD_TOO_LARGE"
    assert alice.get(media_id).status_code == 200


def test_a_streamed_body_under_the_limit_is_processed(alice: Caller) -> None:
    media_id = alice.create()

    response = streamed(alice, json.dumps({"media_ids": [media_id]}).encode())

    assert response.status_code == 200
    assert body(response)["data"]["deleted"]["media_ids"] == [media_id]
