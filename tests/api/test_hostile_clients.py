"""Clients that misbehave (DESIGN.md section 13): a clear 4xx in the envelope, nothing changed."""

from __future__ import annotations

import pytest
from flask import Flask
from werkzeug.test import TestResponse

from tests.helpers import Caller, assert_error, snapshot


def send(
    alice: Caller, raw: str, path: str = "/v1/media/batch", method: str = "DELETE"
) -> TestResponse:
    return alice.client.open(
        path,
        method=method,
        data=raw.encode(),
        headers={**alice.headers, "Content-Type": "application/json"},
    )


@pytest.mark.parametrize(
    ("template", "key"),
    [
        pytest.param('{{"media_ids": ["{id}"], "media_ids": ["{id}"]}}', "media_ids", id="top"),
        pytest.param(
            '{{"media_ids": ["{id}"], "reason": "a", "reason": "b"}}', "reason", id="reason"
        ),
        pytest.param(
            '{{"media_ids": ["{id}"], "x": [{{"y": {{"k": 1, "k": 2}}}}]}}', "k", id="nested"
        ),
    ],
)
def test_a_duplicate_key_at_any_depth_is_refused_and_changes_nothing(
    app: Flask, alice: Caller, template: str, key: str
) -> None:
    media_id = alice.create()
    state = snapshot(app)

    response = send(alice, template.format(id=media_id))

    details = assert_error(
        response, 400, "INVALID_REQUEST", f"Malformed JSON: duplicate key '{key}' in an object"
    )
    assert details == {"key": key}
    assert snapshot(app) == state


@pytest.mark.parametrize(
    "number",
    [
        pytest.param("9" * 5000, id="5000-digit-integer"),
        pytest.param("-" + "9" * 5000, id="5000-digit-negative"),
        pytest.param("1." + "1" * 5000, id="5000-digit-fraction"),
        pytest.param("1e99999", id="huge-exponent"),
        pytest.param("-1e400", id="negative-huge-exponent"),
    ],
)
@pytest.mark.parametrize("where", ["reason", "vector"])
def test_a_number_too_large_is_refused_without_interpreter_internals(
    app: Flask, alice: Caller, number: str, where: str
) -> None:
    media_id = alice.create()
    state = snapshot(app)

    if where == "reason":
        response = send(alice, f'{{"media_ids": ["{media_id}"], "reason": {number}}}')
    else:
        raw = f'{{"hd": [[{number}, 0, 0, 0, 0, 0, 0, 1]], "ld": [0, 0, 0, 1]}}'
        response = send(alice, raw, path="/v1/media", method="POST")

    details = assert_error(response, 400, "INVALID_REQUEST", "Malformed JSON: number too large")
    assert details == {}
    assert snapshot(app) == state


def test_ordinary_numbers_still_parse(alice: Caller) -> None:
    media_id = alice.create()

    response = send(alice, f'{{"media_ids": ["{media_id}"], "reason": 12345678901234567890}}')

    assert_error(response, 400, "INVALID_REQUEST", "Invalid reason: Not a valid string.")


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("DELETE", "/v1//media/batch"),
        ("DELETE", "//v1/media/batch"),
        ("DELETE", "/v1/media//batch"),
        ("GET", "/v1//media/vec-1"),
        ("POST", "/v1//media"),
        ("POST", "/v1/media/"),
        ("DELETE", "/v1/media/batch/"),
        ("GET", "/healthz/"),
    ],
)
def test_no_redirect_is_built_from_the_host_header(
    app: Flask, alice: Caller, method: str, path: str
) -> None:
    media_id = alice.create()
    state = snapshot(app)

    response = alice.client.open(
        path,
        method=method,
        json={"media_ids": [media_id]},
        headers={**alice.headers, "Host": "evil.example"},
    )

    assert "Location" not in response.headers
    assert_error(response, 404, "NOT_FOUND")
    assert snapshot(app) == state


def test_no_rule_ends_in_a_slash_so_none_redirects(app: Flask) -> None:
    # werkzeug redirects `/x` to `/x/` (a 308 built from Host) only for a rule ending in "/".
    assert [rule.rule for rule in app.url_map.iter_rules() if rule.rule.endswith("/")] == []
    assert app.url_map.merge_slashes is False
