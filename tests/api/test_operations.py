"""GET /v1/operations/<id>: a past batch's answer, for its owner only."""

from __future__ import annotations

from typing import Any

import pytest
from flask import Flask

from tests.faults import FlakyVectors
from tests.helpers import Caller, assert_error, body, stores_of, unknown_id


def look_up(caller: Caller, operation_id: str) -> Any:
    return caller.client.get(f"/v1/operations/{operation_id}", headers=caller.headers)


def test_the_owner_gets_the_batchs_own_answer_back(alice: Caller) -> None:
    ids = [alice.create(hd=2, ld=1, seed=n) for n in range(2)]
    answer = body(alice.delete_batch([*ids, "vec-missing"], reason="gdpr"))

    response = look_up(alice, answer["metadata"]["operation_id"])

    assert response.status_code == 200
    expected = {**answer, "metadata": {**answer["metadata"], "status": "completed"}}
    assert body(response) == expected


def test_the_lookup_shows_vectors_left_to_the_reconciler(app: Flask, alice: Caller) -> None:
    media_id = alice.create(hd=2, ld=1)
    held = stores_of(app)
    held.vectors = FlakyVectors(held.vectors, spaces=("hd",))
    answer = body(alice.delete_batch([media_id]))

    found = body(look_up(alice, answer["metadata"]["operation_id"]))

    assert found["data"]["deleted"] == {
        "count": 1,
        "media_ids": [media_id],
        "hd_vectors": 0,
        "ld_vectors": 1,
        "cleanup_pending": [media_id],
    }


@pytest.mark.parametrize("scopes", [["media:read"], ["media:delete"]])
def test_any_key_of_the_owner_with_read_or_delete_may_look(
    app: Flask, alice: Caller, make_key: Any, scopes: list[str]
) -> None:
    operation_id = body(alice.delete_batch([alice.create()]))["metadata"]["operation_id"]
    other = Caller(alice.client, make_key("alice", scopes=scopes), app)

    assert look_up(other, operation_id).status_code == 200


def test_a_key_with_only_write_is_insufficient(app: Flask, alice: Caller, make_key: Any) -> None:
    operation_id = body(alice.delete_batch([alice.create()]))["metadata"]["operation_id"]
    writer = Caller(alice.client, make_key("alice", scopes=["media:write"]), app)

    details = assert_error(
        look_up(writer, operation_id),
        403,
        "INSUFFICIENT_PERMISSIONS",
        "This API key needs one of the scopes media:read, media:delete",
    )
    assert details == {"required_scopes": ["media:read", "media:delete"]}


def test_another_owners_operation_looks_exactly_like_a_missing_one(
    alice: Caller, bob: Caller
) -> None:
    operation_id = body(alice.delete_batch([alice.create()]))["metadata"]["operation_id"]
    missing = f"batch_delete_{unknown_id()[4:]}"

    foreign = look_up(bob, operation_id)
    absent = look_up(bob, missing)

    assert_error(foreign, 404, "OPERATION_NOT_FOUND", f"Operation {operation_id} not found")
    assert_error(absent, 404, "OPERATION_NOT_FOUND", f"Operation {missing} not found")


def test_a_malformed_operation_id_is_not_found(alice: Caller) -> None:
    response = look_up(alice, "x" * 300)

    assert_error(response, 404, "OPERATION_NOT_FOUND", f"Operation {'x' * 128} not found")


def test_looking_up_needs_a_key(client: Any) -> None:
    response = client.get(f"/v1/operations/batch_delete_{'0' * 32}")

    assert_error(response, 401, "INVALID_API_KEY")
