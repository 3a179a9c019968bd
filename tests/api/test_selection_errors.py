"""A bad filter or selection raised by the services reaches the caller in the envelope."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from flask import Flask

from wickson_batch.api.errors import handle_domain_error
from wickson_batch.protocol import ErrorCode
from wickson_batch.services.selection import parse_filter, parse_selection


def answer(app: Flask, error: Exception) -> tuple[int, dict[str, Any]]:
    with app.test_request_context():
        response = handle_domain_error(error)
        payload = response.get_json()
    assert isinstance(payload, dict)
    return response.status_code, payload


def caught(parse: Callable[[Any], object], raw: object) -> Exception:
    with pytest.raises(Exception) as info:
        parse(raw)
    return info.value


def test_a_bad_selection_is_400_invalid_selection_naming_the_position(app: Flask) -> None:
    error = caught(parse_selection, [{"all": True, "exclude": ["vec-a", "no/id"]}])

    status, payload = answer(app, error)

    assert status == 400
    assert payload["success"] is False
    assert payload["message"] == (
        "selection[0].exclude[1] is not a valid media id: ids are "
        "1 to 128 characters from A-Z a-z 0-9 _ . : -"
    )
    assert payload["error"] == {
        "code": ErrorCode.INVALID_SELECTION,
        "details": {
            "request_id": payload["error"]["details"]["request_id"],
            "field": "selection[0].exclude[1]",
        },
    }


def test_the_empty_filter_is_invalid_selection_with_the_documented_message(app: Flask) -> None:
    status, payload = answer(app, caught(parse_selection, [{"filter": {}}]))

    assert status == 400
    assert payload["message"] == (
        'an empty filter selects all your media; send {"all": true} if you mean it'
    )
    assert payload["error"]["code"] == "INVALID_SELECTION"


def test_a_bad_filter_is_400_invalid_request_naming_the_field(app: Flask) -> None:
    status, payload = answer(app, caught(parse_filter, {"colour": "red"}))

    assert status == 400
    assert payload["error"]["code"] == "INVALID_REQUEST"
    assert payload["error"]["details"]["field"] == "filter.colour"
    assert str(payload["message"]).startswith("Unknown filter field: filter.colour")
