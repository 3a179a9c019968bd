"""DELETE /v1/media/batch through the real HTTP stack, on real SQLite and real vector engines."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

from flask import Flask

from tests.faults import FlakyVectors
from tests.helpers import Caller, body, settings_of, stores_of, unknown_id, vector
from wickson_batch.services import cleanup

OPERATION_ID = re.compile(r"^batch_delete_[0-9a-f]{32}$")
TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")


def split_metadata(payload: dict[str, Any]) -> dict[str, Any]:
    """Check the varying metadata fields' form and return the body without them."""
    metadata = payload.pop("metadata")
    assert OPERATION_ID.match(metadata.pop("operation_id"))
    stamp = metadata.pop("timestamp")
    assert TIMESTAMP.match(stamp)
    moment = datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    assert abs(datetime.now(UTC) - moment) < timedelta(minutes=1)
    elapsed = metadata.pop("processing_time_ms")
    assert isinstance(elapsed, int) and elapsed >= 0
    payload["metadata"] = metadata
    return payload


def points(app: Flask, media_id: str) -> tuple[int, int]:
    vectors = stores_of(app).vectors
    return vectors.count("hd", media_id), vectors.count("ld", media_id)


def test_happy_path_returns_the_documented_body(alice: Caller, app: Flask) -> None:
    ids = [alice.create(hd=1, ld=1, seed=n) for n in range(3)]

    response = alice.delete_batch(ids, reason="outdated_content")

    assert response.status_code == 200
    assert response.headers["Content-Type"] == "application/json"
    assert split_metadata(body(response)) == {
        "success": True,
        "message": "Batch deletion completed: 3 deleted, 0 failed",
        "data": {
            "deleted": {"count": 3, "media_ids": ids, "hd_vectors": 3, "ld_vectors": 3},
            "failed": {"count": 0, "media_ids": [], "reasons": {}},
        },
        "metadata": {"reason": "outdated_content"},
    }
    assert [points(app, m) for m in ids] == [(0, 0)] * 3


def test_vector_counts_add_up_over_several_vectors_per_media(alice: Caller, app: Flask) -> None:
    first = alice.create(hd=5, ld=2, seed=1)
    second = alice.create(hd=3, ld=0, seed=2)
    third = alice.create(hd=0, ld=4, seed=3)
    keep = alice.create(hd=2, ld=2, seed=4)

    data = body(alice.delete_batch([first, second, third]))["data"]

    assert data["deleted"]["hd_vectors"] == 8
    assert data["deleted"]["ld_vectors"] == 6
    assert [points(app, m) for m in (first, second, third)] == [(0, 0)] * 3
    assert points(app, keep) == (2, 2)
    assert stores_of(app).vectors.count("hd") == 2


def test_missing_and_foreign_ids_both_fail_as_not_found(
    alice: Caller, bob: Caller, app: Flask
) -> None:
    mine = alice.create(seed=1)
    theirs = bob.create(seed=2)
    missing = unknown_id()

    payload = body(alice.delete_batch([theirs, mine, missing]))

    assert payload["message"] == "Batch deletion completed: 1 deleted, 2 failed"
    assert payload["data"] == {
        "deleted": {"count": 1, "media_ids": [mine], "hd_vectors": 1, "ld_vectors": 1},
        "failed": {
            "count": 2,
            "media_ids": [theirs, missing],
            "reasons": {theirs: "NOT_FOUND", missing: "NOT_FOUND"},
        },
    }
    assert bob.get(theirs).status_code == 200
    assert points(app, theirs) == (1, 1)


def test_every_id_failing_is_still_a_200(alice: Caller) -> None:
    missing = [unknown_id(), unknown_id()]

    response = alice.delete_batch(missing)

    assert response.status_code == 200
    assert body(response)["message"] == "Batch deletion completed: 0 deleted, 2 failed"
    assert body(response)["data"]["deleted"] == {
        "count": 0,
        "media_ids": [],
        "hd_vectors": 0,
        "ld_vectors": 0,
    }


def test_duplicates_collapse_keeping_first_occurrence(alice: Caller) -> None:
    a = alice.create(seed=1)
    b = alice.create(seed=2)
    missing = unknown_id()

    data = body(alice.delete_batch([b, a, b, missing, a, missing]))["data"]

    assert data["deleted"]["media_ids"] == [b, a]
    assert data["deleted"]["hd_vectors"] == 2
    assert data["failed"]["media_ids"] == [missing]


def test_deleting_again_reports_not_found(alice: Caller) -> None:
    media_id = alice.create()
    alice.delete_batch([media_id])

    data = body(alice.delete_batch([media_id]))["data"]

    assert data["deleted"]["count"] == 0
    assert data["failed"]["reasons"] == {media_id: "NOT_FOUND"}


def test_deleted_media_is_gone_from_get_and_search(alice: Caller, app: Flask) -> None:
    dim = settings_of(app).hd_dim
    gone = alice.create(hd=1, ld=0, seed=5)
    kept = alice.create(hd=1, ld=0, seed=6)
    alice.delete_batch([gone])

    assert alice.get(gone).status_code == 404
    found = [hit["media_id"] for hit in body(alice.search(vector(dim, 5)))["data"]["results"]]
    assert found == [kept]


def test_another_owners_media_is_untouched(alice: Caller, bob: Caller, app: Flask) -> None:
    theirs = [bob.create(hd=2, ld=1, seed=n) for n in range(3)]

    alice.delete_batch(theirs)

    assert all(bob.get(m).status_code == 200 for m in theirs)
    assert [points(app, m) for m in theirs] == [(2, 1)] * 3


def test_one_hundred_ids_are_accepted(alice: Caller) -> None:
    ids = [alice.create(seed=n) for n in range(3)] + [unknown_id() for _ in range(97)]

    response = alice.delete_batch(ids)

    assert response.status_code == 200
    assert body(response)["data"]["deleted"]["count"] == 3
    assert body(response)["data"]["failed"]["count"] == 97


def test_one_hundred_and_one_ids_are_refused_and_nothing_changes(alice: Caller) -> None:
    kept = alice.create()
    ids = [kept] + [unknown_id() for _ in range(100)]

    response = alice.delete_batch(ids)

    assert response.status_code == 400
    assert body(response)["message"] == "Maximum 100 media IDs per batch deletion"
    assert body(response)["error"]["code"] == "BATCH_TOO_LARGE"
    assert body(response)["error"]["details"]["max_batch_size"] == 100
    assert alice.get(kept).status_code == 200


def test_post_alias_deletes_the_same_way(alice: Caller) -> None:
    media_id = alice.create()

    response = alice.client.post(
        "/v1/media/batch/delete", json={"media_ids": [media_id]}, headers=alice.headers
    )

    assert response.status_code == 200
    assert body(response)["data"]["deleted"]["media_ids"] == [media_id]
    assert alice.get(media_id).status_code == 404


def test_operation_ids_are_unique_per_request(alice: Caller) -> None:
    seen = {body(alice.delete_batch([unknown_id()]))["metadata"]["operation_id"] for _ in range(5)}

    assert len(seen) == 5


def test_reason_is_null_when_not_given(alice: Caller) -> None:
    response = alice.delete_batch([unknown_id()])

    assert body(response)["metadata"]["reason"] is None


def test_vector_store_failure_deletes_records_and_queues_cleanup(alice: Caller, app: Flask) -> None:
    held = stores_of(app)
    ids = [alice.create(hd=2, ld=1, seed=n) for n in range(2)]
    real = held.vectors
    held.vectors = FlakyVectors(real)

    payload = body(alice.delete_batch(ids))

    assert payload["data"]["deleted"] == {
        "count": 2,
        "media_ids": ids,
        "hd_vectors": 0,
        "ld_vectors": 0,
        "cleanup_pending": ids,
    }
    assert [alice.get(m).status_code for m in ids] == [404, 404]
    assert [points(app, m) for m in ids] == [(2, 1), (2, 1)]
    assert cleanup.pending_cleanup_count(held.db) == 2

    held.vectors = real
    report = cleanup.drain_cleanup(held.db, real, grace=timedelta(0))

    assert report.tasks_done == 2
    assert [points(app, m) for m in ids] == [(0, 0), (0, 0)]
    assert cleanup.pending_cleanup_count(held.db) == 0


def test_failure_in_one_collection_counts_only_the_other(alice: Caller, app: Flask) -> None:
    held = stores_of(app)
    media_id = alice.create(hd=3, ld=2)
    real = held.vectors
    held.vectors = FlakyVectors(real, spaces=("ld",))

    deleted = body(alice.delete_batch([media_id]))["data"]["deleted"]

    assert (deleted["hd_vectors"], deleted["ld_vectors"]) == (3, 0)
    assert deleted["cleanup_pending"] == [media_id]
    assert points(app, media_id) == (0, 2)
