"""GET /v1/media (DESIGN.md section 9): the caller's live media, filtered, paged by cursor."""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import update
from werkzeug.test import TestResponse

from tests.helpers import Caller, assert_error, body, settings_of, stores_of, vector
from wickson_batch.models import Media
from wickson_batch.protocol import Scope
from wickson_batch.services import deletion, media, seeding

LISTING = "/v1/media"


def listing(caller: Caller, **params: Any) -> TestResponse:
    return caller.client.get(LISTING, query_string=params, headers=caller.headers)


def page(caller: Caller, **params: Any) -> dict[str, Any]:
    response = listing(caller, **params)
    assert response.status_code == 200, response.get_json()
    payload = body(response)
    assert set(payload) == {"success", "data"} and payload["success"] is True
    assert set(payload["data"]) == {"items", "has_more", "next_cursor"}
    data: dict[str, Any] = payload["data"]
    return data


def every_page(caller: Caller, **params: Any) -> list[dict[str, Any]]:
    """Page from the first page until has_more is false; return the pages."""
    pages = [page(caller, **params)]
    while pages[-1]["has_more"]:
        assert isinstance(pages[-1]["next_cursor"], str)
        pages.append(page(caller, **params, cursor=pages[-1]["next_cursor"]))
    assert pages[-1]["next_cursor"] is None
    return pages


def listed(caller: Caller, **params: Any) -> list[str]:
    return [item["media_id"] for p in every_page(caller, **params) for item in p["items"]]


def set_columns(app: Flask, media_id: str, **values: Any) -> None:
    """Set columns the API cannot set yet (parent_id) or sets itself (created_at)."""
    with stores_of(app).db.unit_of_work() as uow:
        uow.session.execute(update(Media).where(Media.id == media_id).values(**values))
        uow.commit()


def test_no_media_is_an_empty_last_page(alice: Caller) -> None:
    assert page(alice) == {"items": [], "has_more": False, "next_cursor": None}


def test_items_are_the_media_as_get_shows_them_oldest_first(alice: Caller) -> None:
    first = alice.create(title="first", metadata={"k": "v"})
    second = alice.create(hd=2, ld=0)

    data = page(alice)

    assert data["has_more"] is False and data["next_cursor"] is None
    assert data["items"] == [body(alice.get(first))["data"], body(alice.get(second))["data"]]


def test_pages_of_limit_return_every_media_once_in_order(alice: Caller, app: Flask) -> None:
    ids = [alice.create(seed=n) for n in range(7)]
    # Two share a created_at: the id breaks the tie.
    start = datetime(2026, 1, 1, tzinfo=UTC)
    for n, media_id in enumerate(ids):
        set_columns(app, media_id, created_at=start + timedelta(seconds=min(n, 5)))

    pages = every_page(alice, limit=3)

    assert [len(p["items"]) for p in pages] == [3, 3, 1]
    assert [p["has_more"] for p in pages] == [True, True, False]
    expected = ids[:5] + sorted(ids[5:])
    assert [item["media_id"] for p in pages for item in p["items"]] == expected


def test_the_default_page_is_20_and_the_largest_100(alice: Caller, app: Flask) -> None:
    held = stores_of(app)
    batches = seeding.seed_media(held.db, held.vectors, owner="alice", count=105)
    ids = [media_id for batch in batches for media_id in batch]

    assert len(page(alice)["items"]) == 20
    assert len(page(alice, limit=100)["items"]) == 100
    assert sorted(listed(alice, limit=100)) == sorted(ids)


def test_another_owners_media_never_appear(alice: Caller, bob: Caller) -> None:
    mine = [alice.create(metadata={"k": 1}) for _ in range(3)]
    bob.create(metadata={"k": 1})

    assert listed(alice, limit=1) == mine
    assert listed(alice, **{"metadata.k": "1"}) == mine
    assert len(listed(bob)) == 1


def test_deleted_and_pending_media_are_not_listed(alice: Caller, app: Flask) -> None:
    kept, gone, pending = alice.create(), alice.create(), alice.create()
    assert alice.delete_batch([gone]).status_code == 200
    set_columns(app, pending, state="pending")

    assert listed(alice) == [kept]


def test_metadata_values_are_typed_as_json_scalars(alice: Caller) -> None:
    number = alice.create(metadata={"n": 1, "campaign": "summer-2025"})
    text = alice.create(metadata={"n": "1", "campaign": "summer-2025"})
    boolean = alice.create(metadata={"n": True})
    quoted = alice.create(metadata={"n": "true"})

    assert listed(alice, **{"metadata.n": "1"}) == [number]
    assert listed(alice, **{"metadata.n": "1.0"}) == [number]
    assert listed(alice, **{"metadata.n": '"1"'}) == [text]
    assert listed(alice, **{"metadata.n": "true"}) == [boolean]
    assert listed(alice, **{"metadata.n": '"true"'}) == [quoted]
    assert listed(alice, **{"metadata.campaign": "summer-2025"}) == [number, text]
    assert listed(alice, **{"metadata.campaign": "summer-2025", "metadata.n": "1"}) == [number]
    assert listed(alice, **{"metadata.campaign": "winter"}) == []


def test_time_and_parent_filters(alice: Caller, app: Flask) -> None:
    ids = [alice.create(seed=n) for n in range(4)]
    for n, media_id in enumerate(ids):
        set_columns(app, media_id, created_at=datetime(2025, 5, 30, tzinfo=UTC) + timedelta(days=n))
    set_columns(app, ids[2], parent_id=ids[0])
    set_columns(app, ids[3], parent_id=ids[0])

    assert listed(alice, created_before="2025-06-01") == ids[:2]
    assert listed(alice, created_after="2025-06-01") == ids[2:]
    assert listed(alice, created_after="2025-05-31T00:00:00Z", created_before="2025-06-02") == [
        ids[1],
        ids[2],
    ]
    assert listed(alice, created_before="2025-06-01T02:00:00+02:00") == ids[:2]
    assert listed(alice, parent_id=ids[0]) == ids[2:]
    assert listed(alice, parent_id=ids[0], created_before="2025-06-02") == [ids[2]]


def test_a_filtered_listing_pages_within_its_filter(alice: Caller) -> None:
    summer = [alice.create(metadata={"c": "summer"}) if n % 2 else alice.create() for n in range(9)]
    wanted = [media_id for n, media_id in enumerate(summer) if n % 2]

    pages = every_page(alice, limit=2, **{"metadata.c": "summer"})

    assert [item["media_id"] for p in pages for item in p["items"]] == wanted
    assert len(pages) == 2


def test_paging_while_others_are_created_and_deleted_returns_each_once(
    alice: Caller, app: Flask
) -> None:
    held = stores_of(app)
    dims = settings_of(app).hd_dim, settings_of(app).ld_dim
    stable: list[str] = []
    doomed: list[str] = []
    for n in range(40):  # interleaved, so that deleting a doomed one shifts every later one
        (stable if n % 2 else doomed).append(alice.create(seed=n, metadata={"batch": "x"}))
    # Deleted from both ends: behind the cursor (an offset would skip) and ahead of it.
    victims = [doomed[n // 2] if n % 2 == 0 else doomed[-1 - n // 2] for n in range(len(doomed))]
    created: list[str] = []
    steps = threading.Condition()
    done = threading.Event()
    errors: list[BaseException] = []

    def churn() -> None:
        try:
            for victim in victims:
                if done.is_set():
                    return
                deletion.delete_batch(held.db, held.vectors, owner="alice", media_ids=[victim])
                made = media.create_media(
                    held.db,
                    held.vectors,
                    owner="alice",
                    hd_vectors=[vector(dims[0], 1)],
                    ld_vectors=[vector(dims[1], 1)],
                    metadata={"batch": "x"},
                )
                with steps:
                    created.append(made.media_id)
                    steps.notify_all()
                if len(created) % 3 == 0:  # some of the new ones go again
                    deletion.delete_batch(
                        held.db, held.vectors, owner="alice", media_ids=[created[-2]]
                    )
        except BaseException as error:  # surfaced by the main thread
            errors.append(error)
            with steps:
                steps.notify_all()

    def changed_since(count: int) -> None:
        """Wait (boundedly) until the other thread has changed something since `count`."""
        with steps:
            steps.wait_for(lambda: len(created) > count or errors or len(created) == 20, 30)

    worker = threading.Thread(target=churn)
    worker.start()
    try:
        params = {"limit": 3, "metadata.batch": "x"}
        data = page(alice, **params)
        seen = [item["media_id"] for item in data["items"]]
        while data["next_cursor"] is not None:
            changed_since(len(created))
            data = page(alice, cursor=data["next_cursor"], **params)
            seen += [item["media_id"] for item in data["items"]]
    finally:
        done.set()
        worker.join(60)
    assert not errors, errors

    assert len(seen) == len(set(seen)), "a media was listed twice"
    assert set(stable) <= set(seen), "a media that stayed live was skipped"
    assert set(seen) <= set(stable) | set(doomed) | set(created)
    assert [victim for victim in doomed if victim in seen], "none was deleted behind the cursor"
    assert [victim for victim in doomed if victim not in seen], "none was deleted ahead of it"
    assert set(created) & set(seen), "none of the media created meanwhile was reached"


def test_head_answers_like_get_without_a_body(alice: Caller) -> None:
    alice.create()

    response = alice.client.head(LISTING, headers=alice.headers)

    assert response.status_code == 200
    assert response.data == b""
    assert response.headers["Content-Type"] == "application/json"


def test_the_listing_needs_media_read(client: FlaskClient, make_key: Any, app: Flask) -> None:
    writer = Caller(client, make_key("alice", scopes=[Scope.WRITE]), app)

    assert_error(listing(writer), 403, "INSUFFICIENT_PERMISSIONS")
    assert_error(client.get(LISTING), 401, "INVALID_API_KEY")


# (query parameters, details.field, the message's start)
BAD_PARAMETERS: list[tuple[dict[str, Any], str, str]] = [
    ({"limit": "0"}, "limit", "Query parameter limit must be an integer from 1 to 100"),
    ({"limit": "101"}, "limit", "Query parameter limit must be an integer from 1 to 100"),
    ({"limit": "ten"}, "limit", "Query parameter limit must be an integer from 1 to 100"),
    ({"limit": "-1"}, "limit", "Query parameter limit must be an integer from 1 to 100"),
    ({"limit": ["5", "5"]}, "limit", "Query parameter limit was given 2 times; give it once"),
    ({"cursor": ["a", "b"]}, "cursor", "Query parameter cursor was given 2 times; give it once"),
    (
        {"cursor": "garbage!"},
        "cursor",
        "Invalid cursor: it is not a cursor this service made; start again without one",
    ),
    (
        {"colour": "red"},
        "colour",
        "Unknown query parameter: colour (the listing takes limit, cursor, created_before, "
        "created_after, parent_id and metadata.KEY)",
    ),
    ({"metadata": "x"}, "metadata", "Unknown query parameter: metadata (the listing takes"),
    (
        {"created_before": "June"},
        "created_before",
        "created_before is not an ISO-8601 date or time: 'June'; "
        "e.g. 2025-06-01 or 2025-06-01T12:00:00Z",
    ),
    ({"created_after": "2025-13-01"}, "created_after", "created_after is not an ISO-8601"),
    (
        {"parent_id": "not an id"},
        "parent_id",
        "parent_id must be a media id: 1 to 128 characters from A-Z a-z 0-9 _ . : -",
    ),
    ({"parent_id": ["vec-a", "vec-a"]}, "parent_id", "Query parameter parent_id was given"),
    ({"metadata.": "x"}, "metadata.", "metadata.: a metadata key is 1 to 256 characters"),
    ({"metadata.k": ["1", "2"]}, "metadata.k", "Query parameter metadata.k was given twice"),
    ({"metadata.k": "a\x00b"}, "metadata.k", "metadata.k must not contain the NUL character"),
    ({"metadata.k": "1" * 30}, "metadata.k", "metadata.k is out of range: integers are 64-bit"),
    (
        {"metadata.k": "x" * 201},
        "metadata.k",
        "metadata.k is longer than 200 characters; filter on longer values with a JSON filter",
    ),
]


def test_bad_parameters_are_400_naming_the_parameter(alice: Caller) -> None:
    alice.create()
    for params, field, message in BAD_PARAMETERS:
        response = listing(alice, **params)

        details = assert_error(response, 400, "INVALID_REQUEST")
        assert body(response)["message"].startswith(message), params
        assert details["field"] == field, params


def cursor_of(alice: Caller, **params: Any) -> str:
    for n in range(3):
        alice.create(seed=n, metadata={"k": "v"})
    cursor = page(alice, limit=1, **params)["next_cursor"]
    assert isinstance(cursor, str)
    return cursor


FOREIGN = (
    "Invalid cursor: it belongs to another listing (another owner, or other filters); "
    "page with the filters it was given for, or start again without one"
)


def test_a_cursor_of_another_owner_is_refused(alice: Caller, bob: Caller) -> None:
    cursor = cursor_of(alice)
    bob.create()

    assert_error(listing(bob, cursor=cursor), 400, "INVALID_REQUEST", FOREIGN)


def test_a_cursor_of_other_filters_is_refused(alice: Caller) -> None:
    cursor = cursor_of(alice, **{"metadata.k": "v"})

    assert page(alice, cursor=cursor, **{"metadata.k": "v"})["items"]
    assert_error(listing(alice, cursor=cursor), 400, "INVALID_REQUEST", FOREIGN)
    assert_error(
        listing(alice, cursor=cursor, **{"metadata.k": '"v"', "created_after": "2020-01-01"}),
        400,
        "INVALID_REQUEST",
        FOREIGN,
    )


def test_a_cursor_with_another_page_size_is_fine(alice: Caller) -> None:
    cursor = cursor_of(alice)

    assert len(page(alice, cursor=cursor, limit=5)["items"]) == 2


def tampered(cursor: str, **changes: Any) -> str:
    raw = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    raw.update(changes)
    return base64.urlsafe_b64encode(json.dumps(raw).encode()).decode().rstrip("=")


EDITS: list[Callable[[str], str]] = [
    lambda c: c[:-3],
    lambda c: c[:5] + ("A" if c[5] != "A" else "B") + c[6:],
    lambda c: tampered(c, i="vec-0"),
    lambda c: tampered(c, t="2020-01-01T00:00:00+00:00"),
    lambda c: tampered(c, t=5),
    lambda c: tampered(c, v=2),
    lambda c: base64.urlsafe_b64encode(b"[1, 2]").decode(),
    lambda c: "é" * 10,
    lambda c: "A" * 2000,
]


def test_an_edited_cursor_is_400_never_a_500(alice: Caller) -> None:
    cursor = cursor_of(alice)
    for n, edit in enumerate(EDITS):
        response = listing(alice, cursor=edit(cursor))

        details = assert_error(response, 400, "INVALID_REQUEST")
        assert details == {"field": "cursor"}, n
