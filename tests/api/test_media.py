"""POST /v1/media, GET /v1/media/<id>, POST /v1/media/search."""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from flask import Flask

from tests.faults import FlakyVectors
from tests.helpers import Caller, body, stores_of, vector
from wickson_batch.models import Media, utcnow
from wickson_batch.services import cleanup, seeding
from wickson_batch.vectors.base import Space

MEDIA_ID = re.compile(r"^vec-[0-9a-f]{32}$")
TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")


def test_create_returns_the_new_id_and_counts(alice: Caller, app: Flask) -> None:
    payload = {
        "title": "Sunset",
        "metadata": {"camera": "x100"},
        "hd_vectors": [vector(8, 1), vector(8, 2)],
        "ld_vectors": [vector(4, 3)],
    }

    response = alice.client.post("/v1/media", json=payload, headers=alice.headers)

    assert response.status_code == 201
    data = body(response)["data"]
    assert MEDIA_ID.match(data.pop("media_id"))
    assert TIMESTAMP.match(data.pop("created_at"))
    assert data == {"hd_vectors": 2, "ld_vectors": 1}


def test_created_media_has_all_its_points(alice: Caller, app: Flask) -> None:
    media_id = alice.create(hd=3, ld=2)
    vectors = stores_of(app).vectors

    assert (vectors.count("hd", media_id), vectors.count("ld", media_id)) == (3, 2)


def test_get_returns_the_stored_media(alice: Caller) -> None:
    media_id = alice.create(hd=2, ld=1, title="Sunset", metadata={"camera": "x100"})

    response = alice.get(media_id)

    assert response.status_code == 200
    data = body(response)["data"]
    assert TIMESTAMP.match(data.pop("created_at"))
    assert data == {
        "media_id": media_id,
        "title": "Sunset",
        "metadata": {"camera": "x100"},
        "hd_vectors": 2,
        "ld_vectors": 1,
    }


def test_get_of_another_owners_media_is_not_found(alice: Caller, bob: Caller) -> None:
    theirs = bob.create()

    response = alice.get(theirs)

    assert response.status_code == 404
    assert body(response)["error"]["code"] == "MEDIA_NOT_FOUND"


def test_search_returns_the_nearest_media_first(alice: Caller) -> None:
    near = alice.create(hd=1, ld=0, seed=3)
    far = alice.create(hd=1, ld=0, seed=8)

    results = body(alice.search(vector(8, 3), limit=2))["data"]["results"]

    assert [hit["media_id"] for hit in results] == [near, far]
    assert results[0]["score"] >= results[1]["score"]


def test_search_lists_each_media_once(alice: Caller) -> None:
    media_id = alice.create(hd=5, ld=0, seed=1)

    results = body(alice.search(vector(8, 1), limit=10))["data"]["results"]

    assert [hit["media_id"] for hit in results] == [media_id]


def test_search_never_returns_another_owners_media(alice: Caller, bob: Caller) -> None:
    bob.create(hd=1, ld=1, seed=4)

    for space, dim in (("hd", 8), ("ld", 4)):
        results = body(alice.search(vector(dim, 4), space=space))["data"]["results"]
        assert results == []


def test_search_skips_media_deleted_while_its_points_remain(alice: Caller, app: Flask) -> None:
    held = stores_of(app)
    gone = alice.create(hd=1, ld=0, seed=2)
    kept = alice.create(hd=1, ld=0, seed=9)
    real = held.vectors
    held.vectors = FlakyVectors(real)
    alice.delete_batch([gone])  # the row goes; the point stays for the reconciler
    held.vectors = real

    results = body(alice.search(vector(8, 2)))["data"]["results"]

    assert real.count("hd", gone) == 1
    assert [hit["media_id"] for hit in results] == [kept]


def test_failed_vector_write_leaves_no_media_behind(alice: Caller, app: Flask) -> None:
    held = stores_of(app)
    real = held.vectors
    held.vectors = FlakyVectors(real, operations=("upsert",), spaces=("ld",))
    payload = {"hd_vectors": [vector(8, 1)], "ld_vectors": [vector(4, 1)]}

    response = alice.client.post("/v1/media", json=payload, headers=alice.headers)

    assert response.status_code == 503

    assert response.headers["Retry-After"] == "2"
    assert body(response)["error"]["code"] == "SERVICE_UNAVAILABLE"
    with held.db.unit_of_work() as uow:
        assert uow.session.query(Media).count() == 0
    assert (real.count("hd"), real.count("ld")) == (0, 0)


class ReconcilerDuringUpsert(FlakyVectors):
    """Runs the reconciler's pending sweep (grace 0) just before the first upsert lands."""

    def __init__(self, app: Flask) -> None:
        super().__init__(stores_of(app).vectors, operations=())
        self.db = stores_of(app).db
        self.swept = False

    def upsert(self, space: Space, points: Sequence[Any]) -> None:
        if not self.swept:
            self.swept = True
            cleanup.remove_stale_pending(self.db, grace=timedelta(0))
            cleanup.drain_cleanup(self.db, self.inner, grace=timedelta(0))
        super().upsert(space, points)


def test_creation_overtaken_by_the_reconciler_leaves_nothing(alice: Caller, app: Flask) -> None:
    held = stores_of(app)
    real = held.vectors
    held.vectors = ReconcilerDuringUpsert(app)
    payload = {"hd_vectors": [vector(8, 1)], "ld_vectors": [vector(4, 1)]}

    response = alice.client.post("/v1/media", json=payload, headers=alice.headers)

    assert response.status_code == 503

    assert response.headers["Retry-After"] == "2"
    with held.db.unit_of_work() as uow:
        assert uow.session.query(Media).count() == 0
    assert (real.count("hd"), real.count("ld")) == (0, 0)


def orphans_after_recovery(app: Flask) -> tuple[int, int, cleanup.ConsistencyReport]:
    """Tasks queued by the failure, then one reconciler round once the store is healthy."""
    held = stores_of(app)
    queued = cleanup.pending_cleanup_count(held.db)
    later = utcnow() + timedelta(minutes=10)  # past the grace period and any backoff
    done = cleanup.Reconciler(held.db, held.vectors, interval=1, grace=60, clock=lambda: later)
    return queued, done.run_once().tasks_done, cleanup.check_consistency(held.db, held.vectors)


def test_failed_creation_whose_undo_fails_too_leaves_its_points_to_the_reconciler(
    alice: Caller, app: Flask
) -> None:
    # hd is written, ld fails, and removing hd fails as well: the store is going down.
    held = stores_of(app)
    real = held.vectors
    no_deletes = FlakyVectors(real, operations=("delete",))
    held.vectors = FlakyVectors(no_deletes, operations=("upsert",), spaces=("ld",))
    payload = {"hd_vectors": [vector(8, 1), vector(8, 2)], "ld_vectors": [vector(4, 1)]}

    response = alice.client.post("/v1/media", json=payload, headers=alice.headers)
    held.vectors = real
    left = (real.count("hd"), real.count("ld"))

    assert response.status_code == 503

    assert response.headers["Retry-After"] == "2"
    with held.db.unit_of_work() as uow:
        assert uow.session.query(Media).count() == 0
    assert left == (2, 0)
    queued, done, report = orphans_after_recovery(app)
    assert (queued, done) == (1, 1)
    assert report.consistent and report.orphan_points == {"hd": 0, "ld": 0}
    assert (real.count("hd"), real.count("ld")) == (0, 0)


class OvertakenWhileTheStoreFails(ReconcilerDuringUpsert):
    """The reconciler sweeps the creation first; then the store stops deleting."""

    def upsert(self, space: Space, points: Sequence[Any]) -> None:
        super().upsert(space, points)
        self.operations = {"delete"}  # the creation's own undo will fail


def test_creation_overtaken_by_the_reconciler_while_the_store_fails_leaves_nothing(
    alice: Caller, app: Flask
) -> None:
    held = stores_of(app)
    real = held.vectors
    held.vectors = OvertakenWhileTheStoreFails(app)
    payload = {"hd_vectors": [vector(8, 1)], "ld_vectors": [vector(4, 1)]}

    response = alice.client.post("/v1/media", json=payload, headers=alice.headers)
    held.vectors = real
    left = (real.count("hd"), real.count("ld"))

    assert response.status_code == 503

    assert response.headers["Retry-After"] == "2"
    assert left == (1, 1)  # landed after the sweep had drained the media's task
    queued, done, report = orphans_after_recovery(app)
    assert (queued, done) == (1, 1)
    assert report.consistent and report.orphan_points == {"hd": 0, "ld": 0}


def test_seeding_overtaken_by_the_reconciler_prints_no_id_and_leaves_nothing(app: Flask) -> None:
    held = stores_of(app)
    real = held.vectors
    overtaking = ReconcilerDuringUpsert(app)

    printed = list(seeding.seed_media(held.db, overtaking, owner="acme", count=3, hd=2, ld=1))
    left = (real.count("hd"), real.count("ld"))

    assert printed == [[]]  # none of the three is live: none is printed
    # The points landed after the sweep had drained the rows' tasks; the seed removed them.
    assert overtaking.calls == [
        ("upsert", "hd", 6),
        ("upsert", "ld", 3),
        ("delete", "hd", 6),
        ("delete", "ld", 3),
    ]
    assert left == (0, 0)
    queued, done, report = orphans_after_recovery(app)
    assert (queued, done) == (0, 0)
    assert report.consistent and (real.count("hd"), real.count("ld")) == (0, 0)
