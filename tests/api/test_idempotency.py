"""Idempotency-Key on both batch routes: replay, reuse, in flight, scope, expiry."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from flask import Flask
from werkzeug.test import TestResponse

from tests.faults import BlockingVectors
from tests.helpers import Caller, assert_error, body, snapshot, stores_of, unknown_id

ROUTES = [("DELETE", "/v1/media/batch"), ("POST", "/v1/media/batch/delete")]


def send(
    caller: Caller,
    media_ids: list[str],
    key: str | None,
    route: tuple[str, str] = ROUTES[0],
    reason: str | None = None,
) -> TestResponse:
    headers = dict(caller.headers)
    if key is not None:
        headers["Idempotency-Key"] = key
    payload: dict[str, Any] = {"media_ids": media_ids}
    if reason is not None:
        payload["reason"] = reason
    method, path = route
    return caller.client.open(path, method=method, json=payload, headers=headers)


@pytest.mark.parametrize("route", ROUTES, ids=["delete", "post"])
def test_a_retry_with_the_same_key_and_body_replays_the_first_answer(
    app: Flask, alice: Caller, route: tuple[str, str]
) -> None:
    media = [alice.create(hd=2, ld=1, seed=n) for n in range(2)]
    ids = [*media, unknown_id()]
    first = send(alice, ids, "retry-1", route, reason="gdpr")
    state = snapshot(app)

    again = send(alice, ids, "retry-1", route, reason="gdpr")

    assert again.status_code == 200
    assert body(again) == body(first)  # same operation_id, timestamp, counts, everything
    assert body(first)["data"]["deleted"]["count"] == 2
    assert again.headers["Idempotent-Replayed"] == "true"
    assert "Idempotent-Replayed" not in first.headers
    assert snapshot(app) == state  # nothing deleted again, no second operation stored


def test_without_a_key_a_repeat_is_a_new_request(alice: Caller) -> None:
    media_id = alice.create()
    send(alice, [media_id], None)

    again = body(send(alice, [media_id], None))

    assert again["data"]["failed"]["reasons"] == {media_id: "NOT_FOUND"}


def test_the_key_is_shared_by_both_routes(alice: Caller) -> None:
    media_id = alice.create()
    first = send(alice, [media_id], "both-routes", ROUTES[0])

    again = send(alice, [media_id], "both-routes", ROUTES[1])

    assert body(again) == body(first)
    assert again.headers["Idempotent-Replayed"] == "true"


def test_the_same_key_with_another_body_is_refused_and_changes_nothing(
    app: Flask, alice: Caller
) -> None:
    first, second = alice.create(seed=1), alice.create(seed=2)
    send(alice, [first], "k-1")
    state = snapshot(app)

    response = send(alice, [second], "k-1")

    details = assert_error(
        response,
        422,
        "IDEMPOTENCY_KEY_REUSED",
        "This Idempotency-Key was used with a different request body; "
        "send a new key for a new request",
    )
    assert details == {"header": "Idempotency-Key"}
    assert snapshot(app) == state
    assert alice.get(second).status_code == 200


def test_another_reason_is_another_body(alice: Caller) -> None:
    media_id = alice.create()
    send(alice, [media_id], "k-reason", reason="a")

    response = send(alice, [media_id], "k-reason", reason="b")

    assert_error(response, 422, "IDEMPOTENCY_KEY_REUSED")


def test_keys_are_scoped_per_api_key(app: Flask, alice: Caller, make_key: Any) -> None:
    media_id = alice.create()
    first = body(send(alice, [media_id], "shared-name"))
    other_key = Caller(alice.client, make_key("alice"), app)

    second = send(other_key, [media_id], "shared-name")

    assert second.status_code == 200
    assert "Idempotent-Replayed" not in second.headers
    assert body(second)["metadata"]["operation_id"] != first["metadata"]["operation_id"]
    assert body(second)["data"]["failed"]["reasons"] == {media_id: "NOT_FOUND"}


def test_another_owners_same_key_neither_replays_nor_blocks(alice: Caller, bob: Caller) -> None:
    mine, theirs = alice.create(seed=1), bob.create(seed=2)
    send(alice, [mine], "popular-key")

    response = body(send(bob, [theirs], "popular-key"))

    assert response["data"]["deleted"]["media_ids"] == [theirs]


def test_a_retry_while_the_first_is_running_is_in_use_then_replays(
    app: Flask, alice: Caller
) -> None:
    media_id = alice.create(hd=2, ld=1)
    held = stores_of(app)
    blocking = BlockingVectors(held.vectors)
    held.vectors = blocking
    answers: list[TestResponse] = []
    first = threading.Thread(
        target=lambda: answers.append(
            send(Caller(app.test_client(), alice.key, app), [media_id], "slow")
        )
    )
    first.start()
    try:
        assert blocking.entered.wait(timeout=10)

        during = send(alice, [media_id], "slow")

        details = assert_error(
            during,
            409,
            "IDEMPOTENCY_KEY_IN_USE",
            "A request with this Idempotency-Key is still being processed; retry in a "
            "second to get its answer",
        )
        assert details == {"header": "Idempotency-Key"}
        assert during.headers["Retry-After"] == "1"
    finally:
        blocking.release.set()
        first.join(timeout=30)
    after = send(alice, [media_id], "slow")
    assert body(after) == body(answers[0])
    assert body(after)["data"]["deleted"] == {
        "count": 1,
        "media_ids": [media_id],
        "hd_vectors": 2,
        "ld_vectors": 1,
    }


def test_concurrent_requests_with_one_key_delete_once(app: Flask, alice: Caller) -> None:
    ids = [alice.create(seed=n) for n in range(20)]
    barrier = threading.Barrier(6)
    answers: list[TestResponse] = []

    def fire() -> None:
        caller = Caller(app.test_client(), alice.key, app)
        barrier.wait()
        answers.append(send(caller, ids, "race"))

    threads = [threading.Thread(target=fire) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert len(answers) == 6
    ok = [body(a) for a in answers if a.status_code == 200]
    assert {a.status_code for a in answers} <= {200, 409}
    assert len({a["metadata"]["operation_id"] for a in ok}) == 1  # one decision, replayed
    assert all(a["data"]["deleted"]["media_ids"] == ids for a in ok)
    for a in answers:
        if a.status_code == 409:
            assert body(a)["error"]["code"] == "IDEMPOTENCY_KEY_IN_USE"
    assert all(alice.get(m).status_code == 404 for m in ids)


@pytest.mark.parametrize(
    "key",
    ["", "x" * 256, "has space", "naïve", "tab\there"],
    ids=["empty", "256", "space", "non-ascii", "tab"],
)
def test_a_malformed_key_is_refused_and_changes_nothing(
    app: Flask, alice: Caller, key: str
) -> None:
    media_id = alice.create()
    state = snapshot(app)

    response = send(alice, [media_id], key)

    details = assert_error(
        response,
        400,
        "INVALID_REQUEST",
        "Idempotency-Key must be 1 to 255 visible ASCII characters (a UUID is a good choice)",
    )
    assert details == {"header": "Idempotency-Key"}
    assert snapshot(app) == state


def test_a_key_of_255_characters_is_accepted(alice: Caller) -> None:
    media_id = alice.create()

    response = send(alice, [media_id], "k" * 255)

    assert body(response)["data"]["deleted"]["media_ids"] == [media_id]


def test_an_invalid_batch_does_not_claim_the_key(alice: Caller) -> None:
    media_id = alice.create()
    refused = send(alice, [], "first-try")
    assert refused.status_code == 400

    response = send(alice, [media_id], "first-try")

    assert body(response)["data"]["deleted"]["media_ids"] == [media_id]
