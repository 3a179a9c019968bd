"""Attacks: guessing keys, and reaching another owner's media through any endpoint."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from sqlalchemy.exc import ProgrammingError

from tests.helpers import (
    Caller,
    assert_error,
    body,
    settings_for,
    settings_of,
    snapshot,
    stores_of,
    unknown_id,
    vector,
)
from wickson_batch import create_app
from wickson_batch.services import keys

GUESSER = {"REMOTE_ADDR": "203.0.113.7"}
NEIGHBOUR = {"REMOTE_ADDR": "203.0.113.8"}


@pytest.fixture
def guarded(tmp_path: Path, engine: str) -> Iterator[Flask]:
    """An app that allows 3 failed authentications a minute per address."""
    app = create_app(settings_for(tmp_path, engine, AUTH_FAILURE_LIMIT="3/minute"))
    yield app
    stores_of(app).close()


def get_as(app: Flask, address: dict[str, str], key: str | None) -> Any:
    headers = {"X-Api-Key": key} if key is not None else {}
    return app.test_client().get(f"/v1/media/{unknown_id()}", headers=headers, environ_base=address)


def test_an_address_that_keeps_failing_is_refused_even_with_a_valid_key(guarded: Flask) -> None:
    _, valid = keys.create_key(stores_of(guarded).db, owner="alice")
    failures = [get_as(guarded, GUESSER, f"wkb_guess{n}").status_code for n in range(2)]
    failures.append(get_as(guarded, GUESSER, None).status_code)  # no key is a failure too

    refused = [get_as(guarded, GUESSER, f"wkb_guess{n}") for n in range(2)]
    with_valid = get_as(guarded, GUESSER, valid)

    assert failures == [401, 401, 401]
    for response in [*refused, with_valid]:
        assert_error(response, 429, "RATE_LIMIT_EXCEEDED")
        assert body(response)["message"].startswith(
            "Too many failed authentications from this address; retry in "
        )
        assert 1 <= int(response.headers["Retry-After"]) <= 60
    assert body(with_valid)["error"]["details"]["limit"] == "3 per 1 minute"


def test_a_locked_out_address_learns_nothing_from_the_rate_limit_headers(guarded: Flask) -> None:
    # The key's own limit would show in X-RateLimit-Limit if the limiter still looked the
    # key up: a right guess would stand out from the wrong ones.
    _, valid = keys.create_key(stores_of(guarded).db, owner="alice", rate_limit="50/minute")
    for n in range(3):
        get_as(guarded, GUESSER, f"wkb_guess{n}")

    answers = [get_as(guarded, GUESSER, key) for key in ("wkb_guess9", valid, "wkb_guess10")]

    limits = [response.headers["X-RateLimit-Limit"] for response in answers]
    remaining = [int(response.headers["X-RateLimit-Remaining"]) for response in answers]
    assert [response.status_code for response in answers] == [429] * 3
    assert limits == [limits[0]] * 3 and limits[0] != "50"
    assert remaining == [remaining[0], remaining[0] - 1, remaining[0] - 2]
    details = [assert_error(response, 429, "RATE_LIMIT_EXCEEDED") for response in answers]
    assert details == [{"limit": "3 per 1 minute"}] * 3
    # Refused requests did not use up the key's own limit.
    elsewhere = get_as(guarded, NEIGHBOUR, valid)
    assert elsewhere.status_code == 404
    assert elsewhere.headers["X-RateLimit-Remaining"] == "49"


def test_other_addresses_and_valid_keys_are_not_affected(guarded: Flask) -> None:
    _, valid = keys.create_key(stores_of(guarded).db, owner="alice")
    for n in range(4):
        get_as(guarded, GUESSER, f"wkb_guess{n}")

    assert get_as(guarded, NEIGHBOUR, valid).status_code == 404  # authenticated: not found
    assert [get_as(guarded, NEIGHBOUR, valid).status_code for _ in range(5)] == [404] * 5
    assert guarded.test_client().get("/healthz", environ_base=GUESSER).status_code == 200


def test_successful_requests_do_not_use_up_the_failure_budget(guarded: Flask) -> None:
    _, valid = keys.create_key(stores_of(guarded).db, owner="alice")

    statuses = [get_as(guarded, GUESSER, valid).status_code for _ in range(6)]

    assert statuses == [404] * 6


def test_another_owners_key_can_neither_read_find_count_nor_delete(
    app: Flask, alice: Caller, bob: Caller
) -> None:
    hd, ld = settings_of(app).hd_dim, settings_of(app).ld_dim
    mine = alice.create(hd=2, ld=1, seed=5)
    operation = body(alice.delete_batch([alice.create(seed=9)]))["metadata"]["operation_id"]
    state = snapshot(app)
    missing = unknown_id()

    read, read_missing = bob.get(mine), bob.get(missing)
    found = [
        body(bob.search(vector(hd, 5), "hd", 100)),
        body(bob.search(vector(ld, 5), "ld", 100)),
    ]
    counted = body(
        bob.client.delete(
            "/v1/media/batch?dry_run=true", json={"media_ids": [mine]}, headers=bob.headers
        )
    )
    deleted = body(bob.delete_batch([mine]))
    looked_up = bob.client.get(f"/v1/operations/{operation}", headers=bob.headers)

    assert_error(read, 404, "MEDIA_NOT_FOUND", f"Media {mine} not found")
    assert_error(read_missing, 404, "MEDIA_NOT_FOUND", f"Media {missing} not found")
    assert found == [{"success": True, "data": {"results": []}}] * 2
    for answer in (counted, deleted):
        assert answer["data"]["deleted"] == {
            "count": 0,
            "media_ids": [],
            "hd_vectors": 0,
            "ld_vectors": 0,
        }
        assert answer["data"]["failed"]["reasons"] == {mine: "NOT_FOUND"}
    assert_error(looked_up, 404, "OPERATION_NOT_FOUND")
    after = snapshot(app)
    assert after["media"] == state["media"]
    assert (after["hd_points"], after["ld_points"]) == (state["hd_points"], state["ld_points"])
    assert body(alice.get(mine))["data"]["hd_vectors"] == 2


def test_behind_a_trusted_proxy_the_forwarded_address_is_the_client(
    tmp_path: Path, engine: str
) -> None:
    app = create_app(
        settings_for(tmp_path, engine, AUTH_FAILURE_LIMIT="2/minute", TRUSTED_PROXY_HOPS=1)
    )
    try:
        proxy = {"REMOTE_ADDR": "10.0.0.1"}
        client = app.test_client()

        def attempt(forwarded_for: str) -> int:
            return client.get(
                f"/v1/media/{unknown_id()}",
                headers={"X-Api-Key": "wkb_guess", "X-Forwarded-For": forwarded_for},
                environ_base=proxy,
            ).status_code

        statuses = [attempt("198.51.100.1") for _ in range(3)]
        other_client = attempt("198.51.100.2")
    finally:
        stores_of(app).close()

    assert statuses == [401, 401, 429]
    assert other_client == 401


def test_a_database_error_never_shows_its_sql(
    app: Flask, alice: Caller, monkeypatch: pytest.MonkeyPatch
) -> None:
    media_id = alice.create()

    def broken(*args: Any, **kwargs: Any) -> None:
        raise ProgrammingError(
            "DELETE FROM media WHERE media.owner = ?", {"owner": "alice"}, Exception("no such col")
        )

    monkeypatch.setattr("wickson_batch.api.media.deletion.delete_batch", broken)

    response = alice.delete_batch([media_id])

    assert_error(response, 500, "PROCESSING_ERROR")
    for leak in (b"DELETE", b"media.owner", b"no such col", b"Traceback", b"sqlalchemy"):
        assert leak not in response.data
