"""Surviving restarts and crashes: the SQL truth wins and the reconciler restores the invariant."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy
from flask import Flask
from sqlalchemy import select

from tests.faults import FlakyVectors
from tests.helpers import Caller, body, settings_for, settings_of, stores_of, vector
from wickson_batch import create_app
from wickson_batch.models import CleanupTask, Media, MediaState, utcnow
from wickson_batch.services import cleanup, deletion, keys
from wickson_batch.services.stores import Stores
from wickson_batch.vectors.base import SPACES, Space, VectorIndex, VectorPoint, point_id


def points(vectors: VectorIndex, media_id: str) -> tuple[int, int]:
    return vectors.count("hd", media_id), vectors.count("ld", media_id)


def grace_of(app: Flask) -> timedelta:
    """Return the grace period the app's reconciler gives young tasks and pending rows."""
    return timedelta(seconds=float(settings_of(app).reconcile_grace_seconds))


def tasks(held: Stores) -> list[CleanupTask]:
    with held.db.unit_of_work() as uow:
        return list(uow.session.scalars(select(CleanupTask).order_by(CleanupTask.id)))


# Restart on the embedded stores


@dataclass
class Restarted:
    """A second app on the folders of a first one, after media were created and deleted."""

    app: Flask
    caller: Caller
    deleted: list[str]
    kept: list[str]


@pytest.fixture
def restarted(tmp_path: Path) -> Iterator[Restarted]:
    settings = settings_for(tmp_path, "edge")
    first = create_app(settings)
    try:
        _, key = keys.create_key(stores_of(first).db, owner="alice")
        caller = Caller(first.test_client(), key, first)
        ids = [caller.create(hd=2, ld=1, seed=n) for n in range(4)]
        deleted, kept = ids[:2], ids[2:]
        assert body(caller.delete_batch(deleted))["data"]["deleted"]["count"] == 2
    finally:
        stores_of(first).close()

    second = create_app(settings)
    yield Restarted(second, Caller(second.test_client(), key, second), deleted, kept)
    stores_of(second).close()


def test_deleted_media_stays_gone_after_restart(restarted: Restarted) -> None:
    vectors = stores_of(restarted.app).vectors

    assert [restarted.caller.get(m).status_code for m in restarted.deleted] == [404, 404]
    assert [points(vectors, m) for m in restarted.deleted] == [(0, 0), (0, 0)]


def test_kept_media_has_all_its_points_after_restart(restarted: Restarted) -> None:
    vectors = stores_of(restarted.app).vectors
    responses = [restarted.caller.get(m) for m in restarted.kept]

    assert [r.status_code for r in responses] == [200, 200]
    assert [(body(r)["data"]["hd_vectors"], body(r)["data"]["ld_vectors"]) for r in responses] == [
        (2, 1),
        (2, 1),
    ]
    assert [points(vectors, m) for m in restarted.kept] == [(2, 1), (2, 1)]
    assert (vectors.count("hd"), vectors.count("ld")) == (4, 2)


# A creation that crashed between its row and `live`


def insert_pending(app: Flask, media_id: str, created_at: datetime) -> None:
    """Leave what a crashed creation leaves: a `pending` row and all its points."""
    held = stores_of(app)
    with held.db.unit_of_work() as uow:
        uow.session.add(
            Media(
                id=media_id,
                owner="alice",
                state=MediaState.PENDING,
                hd_count=2,
                ld_count=1,
                created_at=created_at,
            )
        )
        uow.commit()
    counts: dict[Space, int] = {"hd": 2, "ld": 1}
    dims: dict[Space, int] = {"hd": settings_of(app).hd_dim, "ld": settings_of(app).ld_dim}
    for space in SPACES:
        held.vectors.upsert(
            space,
            [
                VectorPoint(point_id(media_id, space, n), vector(dims[space], n), media_id, "alice")
                for n in range(counts[space])
            ],
        )


def media_row(app: Flask, media_id: str) -> Media | None:
    with stores_of(app).db.unit_of_work() as uow:
        return uow.session.get(Media, media_id)


def test_stale_pending_media_is_removed_with_its_points(alice: Caller, app: Flask) -> None:
    held = stores_of(app)
    grace = grace_of(app)
    live = alice.create(hd=2, ld=1, seed=7)
    insert_pending(app, "vec-crashed", utcnow() - grace - timedelta(seconds=1))

    removed = cleanup.remove_stale_pending(held.db, grace=grace)

    assert removed == 1
    assert media_row(app, "vec-crashed") is None
    assert points(held.vectors, "vec-crashed") == (2, 1)  # queued, not yet drained
    assert cleanup.pending_cleanup_count(held.db) == 1
    cleanup.drain_cleanup(held.db, held.vectors, grace=grace)
    assert points(held.vectors, "vec-crashed") == (0, 0)
    assert alice.get(live).status_code == 200
    assert points(held.vectors, live) == (2, 1)


def test_young_pending_media_is_left_alone(app: Flask) -> None:
    held = stores_of(app)
    grace = grace_of(app)
    insert_pending(app, "vec-creating", utcnow() - grace / 2)

    removed = cleanup.remove_stale_pending(held.db, grace=grace)

    row = media_row(app, "vec-creating")
    assert removed == 0
    assert row is not None and row.state == MediaState.PENDING
    assert points(held.vectors, "vec-creating") == (2, 1)


# Cleanup tasks while the vector store fails


@dataclass
class FailedBatch:
    """A batch whose rows were deleted while every point deletion failed."""

    held: Stores
    flaky: FlakyVectors
    ids: list[str]
    at: datetime


@pytest.fixture
def failed_batch(alice: Caller, app: Flask) -> FailedBatch:
    held = stores_of(app)
    ids = [alice.create(hd=2, ld=1, seed=n) for n in range(2)]
    flaky = FlakyVectors(held.vectors)
    at = utcnow()

    outcome = deletion.delete_batch(held.db, flaky, owner="alice", media_ids=ids, clock=lambda: at)

    assert outcome.cleanup_pending == ids
    return FailedBatch(held, flaky, ids, at)


def test_failing_drain_keeps_tasks_and_backs_off(failed_batch: FailedBatch) -> None:
    held, flaky = failed_batch.held, failed_batch.flaky
    now = failed_batch.at + timedelta(seconds=1)

    report = cleanup.drain_cleanup(held.db, flaky, grace=timedelta(0), now=now)

    assert (report.tasks_done, report.tasks_failed) == (0, 2)
    assert [(t.media_id, t.attempts) for t in tasks(held)] == [(m, 1) for m in failed_batch.ids]
    assert {t.next_attempt_at for t in tasks(held)} == {now + cleanup.backoff(1)}
    assert all("injected delete failure" in (t.last_error or "") for t in tasks(held))
    assert [points(held.vectors, m) for m in failed_batch.ids] == [(2, 1), (2, 1)]


def test_drain_before_the_backoff_leaves_tasks_untouched(failed_batch: FailedBatch) -> None:
    held, flaky = failed_batch.held, failed_batch.flaky
    now = failed_batch.at + timedelta(seconds=1)
    cleanup.drain_cleanup(held.db, flaky, grace=timedelta(0), now=now)
    flaky.failing = False
    calls = len(flaky.calls)

    report = cleanup.drain_cleanup(held.db, flaky, grace=timedelta(0), now=now)

    assert (report.tasks_done, report.tasks_failed) == (0, 0)
    assert len(flaky.calls) == calls
    assert [t.attempts for t in tasks(held)] == [1, 1]


def test_each_failure_moves_the_next_attempt_out_further(failed_batch: FailedBatch) -> None:
    held, flaky = failed_batch.held, failed_batch.flaky
    first = failed_batch.at + timedelta(seconds=1)
    cleanup.drain_cleanup(held.db, flaky, grace=timedelta(0), now=first)
    second = first + cleanup.backoff(1)

    cleanup.drain_cleanup(held.db, flaky, grace=timedelta(0), now=second)

    assert [t.attempts for t in tasks(held)] == [2, 2]
    assert {t.next_attempt_at for t in tasks(held)} == {second + cleanup.backoff(2)}
    assert cleanup.backoff(2) > cleanup.backoff(1)


def test_drain_after_recovery_removes_points_and_closes_tasks(failed_batch: FailedBatch) -> None:
    held, flaky = failed_batch.held, failed_batch.flaky
    first = failed_batch.at + timedelta(seconds=1)
    cleanup.drain_cleanup(held.db, flaky, grace=timedelta(0), now=first)
    flaky.failing = False

    report = cleanup.drain_cleanup(
        held.db, flaky, grace=timedelta(0), now=first + cleanup.backoff(1)
    )

    assert (report.tasks_done, report.tasks_failed) == (2, 0)
    assert tasks(held) == []
    assert [points(held.vectors, m) for m in failed_batch.ids] == [(0, 0), (0, 0)]


def test_drain_leaves_tasks_younger_than_grace(failed_batch: FailedBatch) -> None:
    held = failed_batch.held
    grace = timedelta(seconds=60)

    report = cleanup.drain_cleanup(
        held.db, held.vectors, grace=grace, now=failed_batch.at + grace / 2
    )

    assert (report.tasks_done, report.tasks_failed) == (0, 0)
    assert len(tasks(held)) == 2
    assert [points(held.vectors, m) for m in failed_batch.ids] == [(2, 1), (2, 1)]


def test_reconciler_thread_drains_pending_cleanup(failed_batch: FailedBatch) -> None:
    held = failed_batch.held
    reconciler = cleanup.Reconciler(held.db, held.vectors, interval=0.05, grace=0)

    reconciler.start()
    try:
        deadline = time.monotonic() + 5
        while cleanup.pending_cleanup_count(held.db) and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        reconciler.stop()

    assert cleanup.pending_cleanup_count(held.db) == 0
    assert [points(held.vectors, m) for m in failed_batch.ids] == [(0, 0), (0, 0)]


def test_an_orphan_scan_asked_to_stop_leaves_the_rest_for_next_time(
    alice: Caller, app: Flask
) -> None:
    held = stores_of(app)
    media_id = alice.create(hd=2, ld=1)
    with held.db.unit_of_work() as uow:
        uow.session.execute(sqlalchemy.delete(Media).where(Media.id == media_id))
        uow.commit()

    removed = cleanup.remove_orphans(held.db, held.vectors, should_stop=lambda: True)

    assert removed == {}
    assert points(held.vectors, media_id) == (2, 1)
    assert cleanup.remove_orphans(held.db, held.vectors) == {"hd": 2, "ld": 1}
    assert points(held.vectors, media_id) == (0, 0)
