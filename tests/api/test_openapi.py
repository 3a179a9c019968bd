"""GET /openapi.json: a valid OpenAPI 3.1 document that matches what the API really sends."""

from __future__ import annotations

from typing import Any

import jsonschema
from flask import Flask
from flask.testing import FlaskClient
from openapi_spec_validator import validate
from werkzeug.test import TestResponse

from tests.helpers import Caller, body, unknown_id


def spec_of(client: FlaskClient) -> dict[str, Any]:
    response = client.get("/openapi.json")
    assert response.status_code == 200
    return body(response)


def check_against_spec(
    spec: dict[str, Any], path: str, method: str, response: TestResponse
) -> None:
    """Validate a real response's body against the schema the spec documents for its status."""
    documented = spec["paths"][path][method]["responses"][str(response.status_code)]
    schema = documented["content"]["application/json"]["schema"]
    jsonschema.validate(body(response), {**schema, "components": spec["components"]})
    for header, spec_of_header in documented["headers"].items():
        if spec_of_header.get("required"):
            assert header in response.headers, f"{header} documented as always sent but not sent"


def test_spec_is_valid_openapi_3_1(client: FlaskClient) -> None:
    spec = spec_of(client)

    validate(spec)
    assert spec["openapi"] == "3.1.0"


def test_every_route_is_documented(app: Flask, client: FlaskClient) -> None:
    spec = spec_of(client)
    documented = {(path, method.upper()) for path, item in spec["paths"].items() for method in item}
    served = {
        (rule.rule.replace("<media_id:", "<").replace("<", "{").replace(">", "}"), method)
        for rule in app.url_map.iter_rules()
        for method in rule.methods or ()
    }

    assert served == documented


def test_api_key_security_scheme_is_declared(client: FlaskClient) -> None:
    spec = spec_of(client)

    assert spec["components"]["securitySchemes"]["ApiKey"] == {
        "type": "apiKey",
        "in": "header",
        "name": "X-Api-Key",
    }
    assert spec["paths"]["/v1/media/batch"]["delete"]["security"] == [{"ApiKey": []}]
    assert "security" not in spec["paths"]["/healthz"]["get"]


def test_batch_size_limit_is_stated(client: FlaskClient) -> None:
    schema = spec_of(client)["components"]["schemas"]["BatchDeleteRequest"]

    assert schema["properties"]["media_ids"]["maxItems"] == 100


def test_batch_success_matches_its_documented_schema(client: FlaskClient, alice: Caller) -> None:
    spec = spec_of(client)
    media_id = alice.create()

    response = alice.delete_batch([media_id, unknown_id()], reason="cleanup")

    check_against_spec(spec, "/v1/media/batch", "delete", response)


def test_pending_cleanup_field_is_documented(client: FlaskClient) -> None:
    deleted = spec_of(client)["components"]["schemas"]["Deleted"]

    assert "cleanup_pending" in deleted["properties"]
    assert "cleanup_pending" not in deleted["required"]


def test_errors_match_the_documented_envelope(client: FlaskClient, alice: Caller) -> None:
    spec = spec_of(client)
    cases = [
        alice.delete_batch([]),
        client.delete("/v1/media/batch", json={"media_ids": ["x"]}),
        client.delete("/v1/media/batch", data="x", headers={"X-Api-Key": alice.key}),
    ]

    for response in cases:
        check_against_spec(spec, "/v1/media/batch", "delete", response)


def test_media_routes_match_their_documented_schemas(client: FlaskClient, alice: Caller) -> None:
    spec = spec_of(client)
    media_id = alice.create(title="t", metadata={"k": "v"})

    check_against_spec(spec, "/v1/media/{media_id}", "get", alice.get(media_id))
    check_against_spec(spec, "/v1/media/{media_id}", "get", alice.get(unknown_id()))
    check_against_spec(spec, "/v1/media/search", "post", alice.search([1.0] * 8))
    check_against_spec(spec, "/healthz", "get", client.get("/healthz"))
    check_against_spec(spec, "/readyz", "get", client.get("/readyz"))


def test_the_listing_is_documented_with_its_parameters(client: FlaskClient) -> None:
    item = spec_of(client)["paths"]["/v1/media"]

    assert set(item) == {"get", "head", "post"}
    listing = item["get"]
    assert [(p["name"], p["in"], p["required"]) for p in listing["parameters"]] == [
        ("limit", "query", False),
        ("cursor", "query", False),
        ("created_before", "query", False),
        ("created_after", "query", False),
        ("parent_id", "query", False),
        ("metadata.KEY", "query", False),
    ]
    assert listing["parameters"][0]["schema"] == {"type": "integer", "minimum": 1, "maximum": 100}
    assert listing["security"] == [{"ApiKey": []}]
    assert sorted(listing["responses"]) == ["200", "400", "401", "403", "429", "500", "503"]
    assert item["head"]["parameters"] == listing["parameters"]
    assert "content" not in item["head"]["responses"]["200"]
    assert "INVALID_SELECTION" in listing["responses"]["400"]["description"]


def test_listing_answers_match_their_documented_schemas(client: FlaskClient, alice: Caller) -> None:
    spec = spec_of(client)
    alice.create(title="t", metadata={"k": "v"})
    alice.create()

    def get(query: dict[str, str]) -> TestResponse:
        return client.get("/v1/media", query_string=query, headers=alice.headers)

    first = get({"limit": "1"})
    cursor = body(first)["data"]["next_cursor"]
    for response in [first, get({"cursor": cursor, "limit": "1"}), get({"limit": "0"})]:
        check_against_spec(spec, "/v1/media", "get", response)
    assert body(get({"cursor": cursor, "limit": "1"}))["data"]["next_cursor"] is None
