"""Every error of DESIGN.md section 3: its status, code, envelope, and that nothing changed."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import create_engine
from sqlalchemy.orm import sessionmaker
from werkzeug.test import TestResponse

from tests.helpers import (
    Caller,
    Snapshot,
    assert_error,
    body,
    settings_of,
    snapshot,
    stores_of,
    unknown_id,
    vector,
)
from wickson_batch.db import DatabaseUnavailable

BATCH = "/v1/media/batch"
BATCH_POST = "/v1/media/batch/delete"
CREATE = "/v1/media"
SEARCH = "/v1/media/search"

INVALID_IDS_MESSAGE = "media_ids must be a non-empty array of media id strings"
ID_RULE = "1 to 128 characters from A-Z a-z 0-9 _ . : -"
UNSUPPORTED_MESSAGE = (
    "Send a JSON body with the header 'Content-Type: application/json' "
    "(with curl: -H 'Content-Type: application/json')"
)
PROCESSING_MESSAGE = "The request could not be processed; quote the request_id when reporting this"
UNAVAILABLE_MESSAGE = "The database is unavailable; nothing was changed. Retry later."
MiB = 1024 * 1024


def assert_unchanged(app: Flask, before: Snapshot, caller: Caller, media_id: str) -> None:
    """Check that no store changed and that the caller's media is still served."""
    assert snapshot(app) == before
    assert caller.get(media_id).status_code == 200


@pytest.fixture
def mine(alice: Caller) -> str:
    """One media of alice's, made before the bad request."""
    return alice.create(hd=2, ld=1, seed=1)


@pytest.fixture
def before(app: Flask, mine: str, bob: Caller) -> Snapshot:
    """The stores' state before the bad request, with media of two owners in them."""
    bob.create(hd=1, ld=1, seed=2)
    return snapshot(app)


def send_batch(caller: Caller, **kwargs: Any) -> TestResponse:
    """DELETE /v1/media/batch with the caller's key and any body."""
    return caller.client.delete(BATCH, headers=caller.headers, **kwargs)


def send_raw(caller: Caller, text: str | bytes) -> TestResponse:
    """DELETE /v1/media/batch with a raw body labelled application/json."""
    return send_batch(caller, data=text, content_type="application/json")


# --- MISSING_MEDIA_IDS ------------------------------------------------------------------


def test_missing_media_ids_is_refused(
    app: Flask, alice: Caller, mine: str, before: Snapshot
) -> None:
    response = send_batch(alice, json={"reason": "outdated_content"})

    details = assert_error(
        response, 400, "MISSING_MEDIA_IDS", "media_ids is required: an array of media id strings"
    )
    assert details == {}
    assert_unchanged(app, before, alice, mine)


def test_missing_media_ids_is_refused_on_the_post_alias(
    app: Flask, alice: Caller, mine: str, before: Snapshot
) -> None:
    response = alice.client.post(BATCH_POST, json={}, headers=alice.headers)

    assert_error(response, 400, "MISSING_MEDIA_IDS")
    assert_unchanged(app, before, alice, mine)


# --- INVALID_MEDIA_IDS ------------------------------------------------------------------


@pytest.mark.parametrize(
    "media_ids",
    [
        pytest.param([], id="empty-list"),
        pytest.param(None, id="null"),
        pytest.param("vec-1", id="string"),
        pytest.param(7, id="number"),
        pytest.param({"0": "vec-1"}, id="object"),
        pytest.param(True, id="boolean"),
    ],
)
def test_media_ids_that_are_not_a_non_empty_array_are_refused(
    app: Flask, alice: Caller, mine: str, before: Snapshot, media_ids: Any
) -> None:
    response = alice.delete_batch(media_ids)

    details = assert_error(response, 400, "INVALID_MEDIA_IDS", INVALID_IDS_MESSAGE)
    assert details["field"] == "media_ids"
    assert "index" not in details
    assert_unchanged(app, before, alice, mine)


@pytest.mark.parametrize(
    ("bad", "index"),
    [
        pytest.param(5, 1, id="int"),
        pytest.param(None, 1, id="null-item"),
        pytest.param(["vec-1"], 1, id="nested-list"),
        pytest.param("", 1, id="empty-string"),
        pytest.param("v" * 129, 1, id="129-chars"),
        pytest.param("vec/1", 1, id="slash"),
        pytest.param("vec 1", 1, id="space"),
        pytest.param("vec-1\n", 1, id="trailing-newline"),
        pytest.param("véc-1", 1, id="non-ascii"),
    ],
)
def test_a_bad_id_is_refused_naming_its_index(
    app: Flask, alice: Caller, mine: str, before: Snapshot, bad: Any, index: int
) -> None:
    response = alice.delete_batch([mine, bad, unknown_id()])

    details = assert_error(
        response,
        400,
        "INVALID_MEDIA_IDS",
        f"media_ids[{index}] is not a valid media id: ids are {ID_RULE}",
    )
    assert details["field"] == "media_ids"
    assert details["index"] == index
    assert_unchanged(app, before, alice, mine)


def test_the_first_of_several_bad_ids_is_named(
    app: Flask, alice: Caller, mine: str, before: Snapshot
) -> None:
    response = alice.delete_batch([mine, mine, "bad id", 3, ""])

    details = assert_error(response, 400, "INVALID_MEDIA_IDS")
    assert details["index"] == 2
    assert body(response)["message"] == f"media_ids[2] is not a valid media id: ids are {ID_RULE}"
    assert_unchanged(app, before, alice, mine)


def test_an_id_of_128_characters_is_accepted(alice: Caller) -> None:
    longest = "v" * 128

    response = alice.delete_batch([longest])

    assert response.status_code == 200
    assert body(response)["data"]["failed"]["reasons"] == {longest: "NOT_FOUND"}


# --- BATCH_TOO_LARGE --------------------------------------------------------------------


def test_one_hundred_and_one_ids_are_too_large(
    app: Flask, alice: Caller, mine: str, before: Snapshot
) -> None:
    response = alice.delete_batch([mine] + [unknown_id() for _ in range(100)])

    details = assert_error(
        response, 400, "BATCH_TOO_LARGE", "Maximum 100 media IDs per batch deletion"
    )
    assert details == {"max_batch_size": 100, "received": 101}
    assert_unchanged(app, before, alice, mine)


# --- INVALID_REQUEST: the body ----------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        pytest.param('{"media_ids": [', id="truncated"),
        pytest.param("{media_ids: []}", id="unquoted-key"),
        pytest.param("{'media_ids': ['vec-1']}", id="single-quotes"),
        pytest.param('{"media_ids": ["vec-1"],}', id="trailing-comma"),
        pytest.param("", id="empty"),
    ],
)
def test_malformed_json_is_invalid_request(
    app: Flask, alice: Caller, mine: str, before: Snapshot, text: str
) -> None:
    response = send_raw(alice, text)

    assert_error(response, 400, "INVALID_REQUEST")
    assert body(response)["message"].startswith("Malformed JSON")
    assert_unchanged(app, before, alice, mine)


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
def test_non_finite_json_constants_are_invalid_request(
    app: Flask, alice: Caller, mine: str, before: Snapshot, constant: str
) -> None:
    response = send_raw(alice, f'{{"media_ids": ["{mine}"], "reason": {constant}}}')

    assert_error(response, 400, "INVALID_REQUEST", f"Malformed JSON: {constant} is not valid JSON")
    assert_unchanged(app, before, alice, mine)


def test_deeply_nested_json_is_invalid_request(
    app: Flask, alice: Caller, mine: str, before: Snapshot
) -> None:
    response = send_raw(alice, "[" * 100_000 + "]" * 100_000)

    assert_error(response, 400, "INVALID_REQUEST", "Malformed JSON: nested too deeply")
    assert_unchanged(app, before, alice, mine)


def test_a_body_that_is_not_utf8_is_invalid_request(
    app: Flask, alice: Caller, mine: str, before: Snapshot
) -> None:
    response = send_raw(alice, b'{"media_ids": ["\xff\xfe"]}')

    assert_error(response, 400, "INVALID_REQUEST", "Malformed JSON: the body is not UTF-8 text")
    assert_unchanged(app, before, alice, mine)


@pytest.mark.parametrize(
    ("value", "received"),
    [
        pytest.param([], "array", id="array"),
        pytest.param("media_ids", "string", id="string"),
        pytest.param(42, "number", id="number"),
        pytest.param(None, "null", id="null"),
        pytest.param(True, "boolean", id="boolean"),
    ],
)
def test_a_body_that_is_not_an_object_is_invalid_request(
    app: Flask, alice: Caller, mine: str, before: Snapshot, value: Any, received: str
) -> None:
    response = send_raw(alice, json.dumps(value))

    article = "an" if received == "array" else "a"
    message = f"The body must be a JSON object, not {article} {received}"
    details = assert_error(response, 400, "INVALID_REQUEST", message)
    assert details == {"received": received}
    assert_unchanged(app, before, alice, mine)


def test_an_array_of_ids_as_the_body_is_invalid_request(
    app: Flask, alice: Caller, mine: str, before: Snapshot
) -> None:
    response = send_batch(alice, json=[mine])

    details = assert_error(response, 400, "INVALID_REQUEST")
    assert details == {"received": "array"}
    assert_unchanged(app, before, alice, mine)


def test_an_unknown_field_is_invalid_request_naming_it(
    app: Flask, alice: Caller, mine: str, before: Snapshot
) -> None:
    response = alice.delete_batch([mine], dry_run=True)

    details = assert_error(response, 400, "INVALID_REQUEST", "Unknown field: dry_run")
    assert details == {"field": "dry_run"}
    assert_unchanged(app, before, alice, mine)


def test_a_reason_over_500_characters_is_invalid_request(
    app: Flask, alice: Caller, mine: str, before: Snapshot
) -> None:
    response = alice.delete_batch([mine], reason="r" * 501)

    details = assert_error(response, 400, "INVALID_REQUEST")
    assert details["field"] == "reason"
    assert body(response)["message"].startswith("Invalid reason:")
    assert_unchanged(app, before, alice, mine)


def test_a_reason_of_500_characters_is_accepted(alice: Caller, mine: str) -> None:
    reason = "r" * 500

    response = alice.delete_batch([mine], reason=reason)

    assert response.status_code == 200
    assert body(response)["metadata"]["reason"] == reason


@pytest.mark.parametrize(
    "reason",
    [
        pytest.param(42, id="number"),
        pytest.param(["outdated"], id="array"),
        pytest.param({"why": "outdated"}, id="object"),
        pytest.param(False, id="boolean"),
    ],
)
def test_a_reason_that_is_not_a_string_is_invalid_request(
    app: Flask, alice: Caller, mine: str, before: Snapshot, reason: Any
) -> None:
    response = send_batch(alice, json={"media_ids": [mine], "reason": reason})

    details = assert_error(response, 400, "INVALID_REQUEST")
    assert details["field"] == "reason"
    assert body(response)["message"].startswith("Invalid reason:")
    assert_unchanged(app, before, alice, mine)


# Text a database cannot store as sent: PostgreSQL refuses NUL, and no UTF-8 encoder takes a
# lone surrogate. Both are valid JSON escapes; both were a 500 before they were refused here.
UNSTORABLE_TEXT = [
    pytest.param("a\\u0000b", "must not contain the NUL character (\\u0000)", id="nul"),
    pytest.param(
        "\\ud800x",
        "must be Unicode text: it holds a lone surrogate (\\ud800-\\udfff)",
        id="surrogate",
    ),
]


@pytest.mark.parametrize("dry_run", [False, True], ids=["delete", "dry-run"])
@pytest.mark.parametrize(("escaped", "problem"), UNSTORABLE_TEXT)
def test_a_reason_a_database_cannot_store_is_invalid_request(
    app: Flask,
    alice: Caller,
    mine: str,
    before: Snapshot,
    escaped: str,
    problem: str,
    dry_run: bool,
) -> None:
    text = f'{{"media_ids": ["{mine}"], "reason": "{escaped}"}}'

    response = alice.client.delete(
        BATCH + ("?dry_run=true" if dry_run else ""),
        data=text,
        content_type="application/json",
        headers=alice.headers,
    )

    details = assert_error(response, 400, "INVALID_REQUEST", f"Invalid reason: {problem}")
    assert details == {"field": "reason"}
    assert_unchanged(app, before, alice, mine)


@pytest.mark.parametrize(("escaped", "problem"), UNSTORABLE_TEXT)
def test_a_title_a_database_cannot_store_is_invalid_request(
    app: Flask, alice: Caller, mine: str, before: Snapshot, escaped: str, problem: str
) -> None:
    hd = json.dumps([vector(settings_of(app).hd_dim, 3)])
    text = f'{{"title": "{escaped}", "hd_vectors": {hd}}}'

    response = alice.client.post(
        CREATE, data=text, content_type="application/json", headers=alice.headers
    )

    details = assert_error(response, 400, "INVALID_REQUEST", f"Invalid title: {problem}")
    assert details == {"field": "title"}
    assert_unchanged(app, before, alice, mine)


# --- PAYLOAD_TOO_LARGE ------------------------------------------------------------------


def test_a_20_mb_batch_body_is_payload_too_large(
    app: Flask, alice: Caller, mine: str, before: Snapshot
) -> None:
    text = json.dumps({"media_ids": [mine], "reason": "r" * (20 * MiB)})

    response = send_raw(alice, text)

    details = assert_error(
        response, 413, "PAYLOAD_TOO_LARGE", f"Request body too large: at most {MiB} bytes"
    )
    assert details == {"max_bytes": MiB}
    assert_unchanged(app, before, alice, mine)


def test_a_20_mb_create_body_is_payload_too_large(
    app: Flask, alice: Caller, mine: str, before: Snapshot
) -> None:
    text = json.dumps({"hd_vectors": [], "title": "t" * (20 * MiB)})

    response = alice.client.post(
        CREATE, data=text, content_type="application/json", headers=alice.headers
    )

    details = assert_error(response, 413, "PAYLOAD_TOO_LARGE")
    assert details == {"max_bytes": 8 * MiB}
    assert_unchanged(app, before, alice, mine)


# --- UNSUPPORTED_MEDIA_TYPE -------------------------------------------------------------


@pytest.mark.parametrize("content_type", ["text/plain", "application/xml", "application/jsonx"])
def test_a_body_that_is_not_labelled_json_is_unsupported(
    app: Flask, alice: Caller, mine: str, before: Snapshot, content_type: str
) -> None:
    response = send_batch(alice, data=json.dumps({"media_ids": [mine]}), content_type=content_type)

    details = assert_error(response, 415, "UNSUPPORTED_MEDIA_TYPE", UNSUPPORTED_MESSAGE)
    assert details == {"content_type": content_type}
    assert_unchanged(app, before, alice, mine)


def test_form_data_is_unsupported(app: Flask, alice: Caller, mine: str, before: Snapshot) -> None:
    response = send_batch(alice, data={"media_ids": mine})

    details = assert_error(response, 415, "UNSUPPORTED_MEDIA_TYPE", UNSUPPORTED_MESSAGE)
    assert details == {"content_type": "application/x-www-form-urlencoded"}
    assert_unchanged(app, before, alice, mine)


def test_no_body_at_all_is_unsupported(
    app: Flask, alice: Caller, mine: str, before: Snapshot
) -> None:
    response = send_batch(alice)

    details = assert_error(response, 415, "UNSUPPORTED_MEDIA_TYPE", UNSUPPORTED_MESSAGE)
    assert details == {"content_type": None}
    assert "Content-Type: application/json" in body(response)["message"]
    assert_unchanged(app, before, alice, mine)


def test_json_with_a_charset_is_accepted(alice: Caller, mine: str) -> None:
    response = send_batch(
        alice,
        data=json.dumps({"media_ids": [mine]}),
        content_type="application/json; charset=utf-8",
    )

    assert response.status_code == 200
    assert body(response)["data"]["deleted"]["media_ids"] == [mine]


# --- NOT_FOUND, METHOD_NOT_ALLOWED ------------------------------------------------------


@pytest.mark.parametrize("path", ["/v1/nothing", "/", "/v1/media/batch/delete/again", "/v2/media"])
def test_an_unknown_route_is_not_found_in_the_envelope(
    app: Flask, alice: Caller, mine: str, before: Snapshot, path: str
) -> None:
    response = alice.client.get(path, headers=alice.headers)

    details = assert_error(response, 404, "NOT_FOUND", "No such route: check the method and path")
    assert details == {}
    assert_unchanged(app, before, alice, mine)


def test_put_on_the_batch_route_is_method_not_allowed_with_allow(
    app: Flask, alice: Caller, mine: str, before: Snapshot
) -> None:
    response = alice.client.put(BATCH, json={"media_ids": [mine]}, headers=alice.headers)

    details = assert_error(
        response, 405, "METHOD_NOT_ALLOWED", "Method PUT not allowed here; allowed: DELETE"
    )
    assert details == {"allowed_methods": ["DELETE"]}
    # Not GET nor HEAD: "batch" is never a media id (tests/api/test_methods.py).
    assert response.headers["Allow"] == "DELETE"
    assert_unchanged(app, before, alice, mine)


def test_get_on_the_post_alias_is_method_not_allowed_with_allow(
    app: Flask, alice: Caller, mine: str, before: Snapshot
) -> None:
    response = alice.client.get(BATCH_POST, headers=alice.headers)

    assert_error(response, 405, "METHOD_NOT_ALLOWED", "Method GET not allowed here; allowed: POST")
    assert response.headers["Allow"] == "POST"
    assert_unchanged(app, before, alice, mine)


# --- MEDIA_NOT_FOUND --------------------------------------------------------------------


def without_ids(response: TestResponse, media_id: str) -> dict[str, Any]:
    """Return an error body with its request id dropped and the media id blanked."""
    payload = body(response)
    payload["message"] = payload["message"].replace(media_id, "<id>")
    del payload["error"]["details"]["request_id"]
    return payload


def test_a_missing_id_get_is_media_not_found(alice: Caller) -> None:
    missing = unknown_id()

    response = alice.get(missing)

    details = assert_error(response, 404, "MEDIA_NOT_FOUND", f"Media {missing} not found")
    assert details == {}


def test_foreign_id_get_is_media_not_found(app: Flask, alice: Caller, bob: Caller) -> None:
    theirs = bob.create(seed=3)
    before = snapshot(app)

    response = alice.get(theirs)

    details = assert_error(response, 404, "MEDIA_NOT_FOUND", f"Media {theirs} not found")
    assert details == {}
    assert_unchanged(app, before, bob, theirs)


def test_foreign_and_missing_ids_look_the_same(alice: Caller, bob: Caller) -> None:
    theirs = bob.create(seed=3)
    missing = unknown_id()

    foreign_response = alice.get(theirs)
    missing_response = alice.get(missing)

    assert foreign_response.status_code == missing_response.status_code == 404
    assert foreign_response.headers["Content-Type"] == missing_response.headers["Content-Type"]
    assert without_ids(foreign_response, theirs) == without_ids(missing_response, missing)


def test_a_malformed_id_get_is_media_not_found(alice: Caller) -> None:
    response = alice.get("v" * 200)

    assert_error(response, 404, "MEDIA_NOT_FOUND")


# --- PROCESSING_ERROR, SERVICE_UNAVAILABLE ----------------------------------------------


def test_an_unexpected_exception_is_a_processing_error_without_internals(
    app: Flask, alice: Caller, mine: str, before: Snapshot, monkeypatch: pytest.MonkeyPatch
) -> None:
    def explode(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("secret internals")

    monkeypatch.setattr("wickson_batch.api.media.deletion.delete_batch", explode)

    response = alice.delete_batch([mine])

    details = assert_error(response, 500, "PROCESSING_ERROR", PROCESSING_MESSAGE)
    assert details == {}
    for leak in (b"secret internals", b"RuntimeError", b"Traceback", b"explode", b".py"):
        assert leak not in response.data
    assert_unchanged(app, before, alice, mine)


def test_a_database_failure_in_the_service_is_service_unavailable(
    app: Flask, alice: Caller, mine: str, before: Snapshot, monkeypatch: pytest.MonkeyPatch
) -> None:
    def unavailable(*args: Any, **kwargs: Any) -> None:
        raise DatabaseUnavailable("could not connect to server db.internal:5432")

    monkeypatch.setattr("wickson_batch.api.media.deletion.delete_batch", unavailable)

    response = alice.delete_batch([mine])

    details = assert_error(response, 503, "SERVICE_UNAVAILABLE", UNAVAILABLE_MESSAGE)
    assert details == {}
    assert b"db.internal" not in response.data
    assert_unchanged(app, before, alice, mine)


@pytest.mark.parametrize("route", ["batch", "get"])
def test_an_unreachable_database_is_service_unavailable(
    app: Flask,
    alice: Caller,
    mine: str,
    before: Snapshot,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    route: str,
) -> None:
    db = stores_of(app).db
    unreachable = create_engine(f"sqlite:///{tmp_path / 'absent' / 'wickson.db'}")
    try:
        with monkeypatch.context() as patch:
            db.engine.dispose()
            patch.setattr(db, "engine", unreachable)
            patch.setattr(db, "sessions", sessionmaker(unreachable, expire_on_commit=False))
            response = alice.delete_batch([mine]) if route == "batch" else alice.get(mine)
    finally:
        unreachable.dispose()

    details = assert_error(response, 503, "SERVICE_UNAVAILABLE", UNAVAILABLE_MESSAGE)
    assert details == {}
    assert b"absent" not in response.data
    assert_unchanged(app, before, alice, mine)


# --- POST /v1/media validation ----------------------------------------------------------


def post_create(caller: Caller, payload: Any) -> TestResponse:
    return caller.client.post(CREATE, json=payload, headers=caller.headers)


def test_create_without_any_vector_is_invalid_request(
    app: Flask, alice: Caller, mine: str, before: Snapshot
) -> None:
    response = post_create(alice, {"title": "empty", "hd_vectors": [], "ld_vectors": []})

    details = assert_error(
        response,
        400,
        "INVALID_REQUEST",
        "a media needs at least one vector in hd_vectors or ld_vectors",
    )
    assert details == {"field": "hd_vectors"}
    assert_unchanged(app, before, alice, mine)


def test_create_with_an_empty_body_is_invalid_request(
    app: Flask, alice: Caller, mine: str, before: Snapshot
) -> None:
    response = post_create(alice, {})

    assert_error(response, 400, "INVALID_REQUEST")
    assert_unchanged(app, before, alice, mine)


@pytest.mark.parametrize("space", ["hd", "ld"])
def test_create_with_a_wrong_dimension_is_invalid_request(
    app: Flask, alice: Caller, mine: str, before: Snapshot, space: str
) -> None:
    dim = getattr(settings_of(app), f"{space}_dim")
    payload = {f"{space}_vectors": [vector(dim, 1), vector(dim + 1, 2)]}

    response = post_create(alice, payload)

    details = assert_error(
        response,
        400,
        "INVALID_REQUEST",
        f"Invalid {space}_vectors[1]: has {dim + 1} dimensions; this service stores {dim}",
    )
    assert details == {"field": f"{space}_vectors", "path": [1]}
    assert_unchanged(app, before, alice, mine)


def test_create_with_more_than_256_vectors_is_invalid_request(
    app: Flask, alice: Caller, mine: str, before: Snapshot
) -> None:
    dim = settings_of(app).hd_dim

    response = post_create(alice, {"hd_vectors": [vector(dim, n) for n in range(257)]})

    details = assert_error(response, 400, "INVALID_REQUEST")
    assert details["field"] == "hd_vectors"
    assert body(response)["message"].startswith("Invalid hd_vectors:")
    assert_unchanged(app, before, alice, mine)


def test_create_with_256_vectors_is_accepted(alice: Caller, app: Flask) -> None:
    dim = settings_of(app).ld_dim

    response = post_create(alice, {"ld_vectors": [vector(dim, n) for n in range(256)]})

    assert response.status_code == 201
    assert body(response)["data"]["ld_vectors"] == 256


def test_create_with_an_unknown_field_is_invalid_request_naming_it(
    app: Flask, alice: Caller, mine: str, before: Snapshot
) -> None:
    dim = settings_of(app).hd_dim

    response = post_create(alice, {"hd_vectors": [vector(dim, 1)], "media_id": "vec-mine"})

    details = assert_error(response, 400, "INVALID_REQUEST", "Unknown field: media_id")
    assert details == {"field": "media_id"}
    assert_unchanged(app, before, alice, mine)


def test_create_with_a_non_numeric_value_is_invalid_request(
    app: Flask, alice: Caller, mine: str, before: Snapshot
) -> None:
    dim = settings_of(app).hd_dim

    response = post_create(alice, {"hd_vectors": [["x"] * dim]})

    details = assert_error(response, 400, "INVALID_REQUEST")
    assert details["field"] == "hd_vectors"
    assert_unchanged(app, before, alice, mine)


# --- POST /v1/media/search validation ---------------------------------------------------


def post_search(caller: Caller, payload: Any) -> TestResponse:
    return caller.client.post(SEARCH, json=payload, headers=caller.headers)


@pytest.mark.parametrize("space", ["xd", "HD", "", None, 1])
def test_search_in_an_unknown_space_is_invalid_request(
    app: Flask, alice: Caller, mine: str, before: Snapshot, space: Any
) -> None:
    payload = {"vector": vector(settings_of(app).hd_dim, 1), "space": space, "limit": 5}

    response = post_search(alice, payload)

    details = assert_error(response, 400, "INVALID_REQUEST")
    assert details["field"] == "space"
    assert body(response)["message"].startswith("Invalid space:")
    assert_unchanged(app, before, alice, mine)


@pytest.mark.parametrize("limit", [0, 101, -1, 1.5, "10", True])
def test_search_with_a_limit_outside_1_to_100_is_invalid_request(
    app: Flask, alice: Caller, mine: str, before: Snapshot, limit: Any
) -> None:
    payload = {"vector": vector(settings_of(app).hd_dim, 1), "space": "hd", "limit": limit}

    response = post_search(alice, payload)

    details = assert_error(response, 400, "INVALID_REQUEST")
    assert details["field"] == "limit"
    assert body(response)["message"].startswith("Invalid limit:")
    assert_unchanged(app, before, alice, mine)


@pytest.mark.parametrize("space", ["hd", "ld"])
def test_search_with_a_wrong_dimension_is_invalid_request(
    app: Flask, alice: Caller, mine: str, before: Snapshot, space: str
) -> None:
    dim = getattr(settings_of(app), f"{space}_dim")

    response = post_search(alice, {"vector": vector(dim - 1, 1), "space": space})

    details = assert_error(
        response,
        400,
        "INVALID_REQUEST",
        f"vector (space {space}) has {dim - 1} dimensions; this service stores {dim}",
    )
    assert details == {"field": "vector"}
    assert_unchanged(app, before, alice, mine)


def test_search_without_a_vector_is_invalid_request(
    app: Flask, alice: Caller, mine: str, before: Snapshot
) -> None:
    response = post_search(alice, {"space": "hd"})

    details = assert_error(response, 400, "INVALID_REQUEST")
    assert details["field"] == "vector"
    assert_unchanged(app, before, alice, mine)


def test_search_with_an_unknown_field_is_invalid_request_naming_it(
    app: Flask, alice: Caller, mine: str, before: Snapshot
) -> None:
    payload = {"vector": vector(settings_of(app).hd_dim, 1), "space": "hd", "owner": "bob"}

    response = post_search(alice, payload)

    details = assert_error(response, 400, "INVALID_REQUEST", "Unknown field: owner")
    assert details == {"field": "owner"}
    assert_unchanged(app, before, alice, mine)
