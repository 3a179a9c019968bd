"""Which methods each path answers: reserved segments, no OPTIONS, and the spec says so exactly."""

from __future__ import annotations

from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from tests.helpers import Caller, body, settings_for, stores_of
from wickson_batch import create_app
from wickson_batch.protocol import RESERVED_MEDIA_SEGMENTS
from wickson_batch.services import keys

# Every method a client could send; the server must answer exactly the documented ones.
PROBED = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE")


def assert_method_not_allowed(response: TestResponse, method: str, allow: list[str]) -> None:
    assert response.status_code == 405, response.data[:300]
    assert response.headers["Allow"] == ", ".join(allow)
    assert response.headers["Content-Type"] == "application/json"
    if method == "HEAD":
        assert response.data == b""
        return
    payload = body(response)
    assert payload == {
        "success": False,
        "message": f"Method {method} not allowed here; allowed: {', '.join(allow)}",
        "error": {
            "code": "METHOD_NOT_ALLOWED",
            "details": {
                "request_id": response.headers["X-Request-ID"],
                "allowed_methods": allow,
            },
        },
    }


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("GET", "/v1/media/batch", ["DELETE"]),
        ("HEAD", "/v1/media/batch", ["DELETE"]),
        ("POST", "/v1/media/batch", ["DELETE"]),
        ("GET", "/v1/media/search", ["POST"]),
        ("HEAD", "/v1/media/search", ["POST"]),
        ("DELETE", "/v1/media/search", ["POST"]),
        ("GET", "/v1/media/batch/delete", ["POST"]),
        ("DELETE", "/v1/media/batch/delete", ["POST"]),
        ("OPTIONS", "/v1/media/batch", ["DELETE"]),
        ("OPTIONS", "/v1/media/vec-0123", ["GET", "HEAD"]),
        ("PUT", "/v1/media/vec-0123", ["GET", "HEAD"]),
        ("PUT", "/v1/media", ["GET", "HEAD", "POST"]),
        ("DELETE", "/v1/media", ["GET", "HEAD", "POST"]),
    ],
)
def test_a_reserved_segment_is_never_a_media_id(
    alice: Caller, method: str, path: str, allow: list[str]
) -> None:
    response = alice.client.open(path, method=method, headers=alice.headers)

    assert_method_not_allowed(response, method, allow)


def test_every_fixed_segment_under_media_is_reserved(app: Flask) -> None:
    fixed = {
        rule.rule.removeprefix("/v1/media/").split("/")[0]
        for rule in app.url_map.iter_rules()
        if rule.rule.startswith("/v1/media/") and "<" not in rule.rule.split("/")[3]
    }

    assert fixed == RESERVED_MEDIA_SEGMENTS


def test_a_media_id_that_only_starts_like_a_reserved_word_is_looked_up(alice: Caller) -> None:
    for media_id in ("batchx", "searches", "xbatch"):
        response = alice.get(media_id)

        assert response.status_code == 404
        assert body(response)["error"]["code"] == "MEDIA_NOT_FOUND"


def test_options_never_looks_up_the_api_key(tmp_path: Path) -> None:
    """A valid key and a wrong one get the same OPTIONS answer, and neither counts as a failure."""
    app = create_app(settings_for(tmp_path, "qdrant-local", AUTH_FAILURE_LIMIT="1/minute"))
    try:
        client = app.test_client()
        _, valid = keys.create_key(stores_of(app).db, owner="o", rate_limit="7/minute")
        answers = []
        for key in (valid, "wkb_wrong", valid, "wkb_wrong"):
            response = client.options("/v1/media/search", headers={"X-Api-Key": key})
            headers = {name: value for name, value in response.headers if name != "X-Request-ID"}
            answers.append((response.status_code, headers, response.get_json()["message"]))
        # One failure is allowed in the window: had OPTIONS counted one, this would be 429.
        after = client.post("/v1/media/search", json={}, headers={"X-Api-Key": valid})
    finally:
        stores_of(app).close()

    assert answers == [answers[0]] * 4
    status, headers, _ = answers[0]
    assert status == 405
    assert headers["Allow"] == "POST"
    assert not any(name.startswith("X-RateLimit") for name in headers)
    assert after.status_code == 400  # the key is valid and still let in


def served_methods(client: FlaskClient, path: str) -> set[str]:
    """Probe a path with every method: the ones not refused with 405 are the ones it answers."""
    return {
        method
        for method in PROBED
        if client.open(path, method=method, headers={"X-Api-Key": "wkb_x"}).status_code != 405
    }


SAMPLE_VALUES = {
    "media_id": "vec-0123",
    "operation_id": "batch_delete_0123",
    "job_id": "job_" + "0" * 32,
    "name": "init.js",
}


def test_the_spec_documents_exactly_the_methods_each_path_answers(
    app: Flask, client: FlaskClient
) -> None:
    spec = body(client.get("/openapi.json"))
    seen = set()

    for rule in app.url_map.iter_rules():
        path = rule.rule
        template = path
        for name, value in SAMPLE_VALUES.items():
            for converter in ("", "media_id:"):
                path = path.replace(f"<{converter}{name}>", value)
                template = template.replace(f"<{converter}{name}>", f"{{{name}}}")
        assert "<" not in path, path
        documented = {method.upper() for method in spec["paths"][template]}
        seen.add(template)

        assert served_methods(client, path) == documented, template

    assert seen == set(spec["paths"])
