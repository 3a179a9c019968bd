"""The deletion-job runner on the real stores (SQLite, and PostgreSQL in the server pass).

Leases: one runner at a time per job, a lapsed lease taken over, a stale runner fenced off;
throttling; bounded vector-store calls; the runner thread started and stopped by the app.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import select

from tests.faults import FlakyVectors
from tests.helpers import ENGINES, Caller, job_runner, settings_for, stores_of, unknown_id
from wickson_batch import create_app
from wickson_batch.models import DeletionJob, DeletionJobItem, Media, utcnow
from wickson_batch.protocol import ItemStatus, JobStatus
from wickson_batch.services import job_runner as runner_service
from wickson_batch.services import jobs, keys
from wickson_batch.services.cleanup import pending_cleanup_count
from wickson_batch.services.deletion import delete_batch
from wickson_batch.services.job_runner import LeaseLost
from wickson_batch.services.selection import parse_selection

OWNER = "acme"


@pytest.fixture
def app(tmp_path: Path) -> Iterator[Flask]:
    made = create_app(settings_for(tmp_path, ENGINES[0]))
    yield made
    stores_of(made).close()


@pytest.fixture
def acme(app: Flask) -> Caller:
    _, secret = keys.create_key(stores_of(app).db, owner=OWNER)
    return Caller(app.test_client(), secret, app)


def new_job(app: Flask, media_ids: list[str]) -> str:
    view, _ = jobs.create_job(stores_of(app).db, owner=OWNER, selection=parse_selection(media_ids))
    return view.job_id


def job_row(app: Flask, job_id: str) -> DeletionJob:
    with stores_of(app).db.unit_of_work() as uow:
        job = uow.session.get(DeletionJob, job_id)
        assert job is not None
        return job


def item_statuses(app: Flask, job_id: str) -> dict[str, str]:
    with stores_of(app).db.unit_of_work() as uow:
        rows = uow.session.execute(
            select(DeletionJobItem.media_id, DeletionJobItem.status).where(
                DeletionJobItem.job_id == job_id
            )
        )
        return {media_id: status for media_id, status in rows}


def live(app: Flask, media_ids: list[str]) -> set[str]:
    with stores_of(app).db.unit_of_work() as uow:
        return set(uow.session.scalars(select(Media.id).where(Media.id.in_(media_ids))))


def test_a_held_job_is_claimed_by_one_runner_only(app: Flask) -> None:
    job_id = new_job(app, [unknown_id()])
    db = stores_of(app).db

    assert runner_service.claim_next_job(db, "runner-a", 30) == job_id
    assert runner_service.claim_next_job(db, "runner-b", 30) is None
    assert job_row(app, job_id).lease_holder == "runner-a"


def test_runners_racing_for_jobs_never_share_one(app: Flask) -> None:
    made = [new_job(app, [unknown_id()]) for _ in range(6)]
    db = stores_of(app).db
    claimed: dict[str, list[str]] = {}
    barrier = threading.Barrier(4)

    def race(name: str) -> None:
        barrier.wait()
        for _ in range(6):
            job_id = runner_service.claim_next_job(db, name, 30)
            if job_id is not None:
                claimed.setdefault(name, []).append(job_id)

    threads = [threading.Thread(target=race, args=(f"r{n}",)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)

    # A runner may take its own job again (it resumes it); never another runner's.
    holders: dict[str, set[str]] = {}
    for name, taken in claimed.items():
        for job_id in taken:
            holders.setdefault(job_id, set()).add(name)
    assert all(len(names) == 1 for names in holders.values()), holders
    assert {job_row(app, job_id).lease_holder for job_id in holders} <= set(claimed)
    assert set(holders) <= set(made) and len(holders) >= 4


def test_a_lapsed_lease_is_taken_over_and_the_job_finishes_exactly(
    app: Flask, acme: Caller
) -> None:
    mine = [acme.create(seed=n) for n in range(9)]
    job_id = new_job(app, [*mine, unknown_id()])
    held = stores_of(app)
    # Runner a resolves the manifest and decides one chunk, then dies (no release).
    assert runner_service.claim_next_job(held.db, "runner-a", 30) == job_id
    runner_service.resolve_manifest(held.db, job_id, "runner-a", max_media=100)
    runner_service.run_chunk(held.db, held.vectors, job_id, "runner-a", chunk_size=4)
    assert runner_service.claim_next_job(held.db, "runner-b", 30) is None  # still held

    later = utcnow() + timedelta(seconds=31)
    taker = job_runner(app, chunk_size=4)
    taker.clock = lambda: later
    assert taker.run_once() == job_id

    job = job_row(app, job_id)
    assert job.status == JobStatus.DONE and job.lease_holder is None
    assert (job.total, job.deleted, job.failed) == (10, 9, 1)
    statuses = item_statuses(app, job_id)
    assert len(statuses) == 10 and ItemStatus.PENDING not in statuses.values()
    assert not live(app, mine)


def test_a_runner_that_lost_its_lease_changes_nothing(app: Flask, acme: Caller) -> None:
    mine = [acme.create(seed=n) for n in range(6)]
    job_id = new_job(app, mine)
    held = stores_of(app)
    runner_service.claim_next_job(held.db, "runner-a", 30)
    runner_service.resolve_manifest(held.db, job_id, "runner-a", max_media=100)
    # Its lease lapses; runner b takes the job over.
    later = utcnow() + timedelta(seconds=31)
    assert runner_service.claim_next_job(held.db, "runner-b", 30, now=later) == job_id

    with pytest.raises(LeaseLost):
        runner_service.run_chunk(held.db, held.vectors, job_id, "runner-a", chunk_size=3)
    with pytest.raises(LeaseLost):
        runner_service.renew_lease(held.db, job_id, "runner-a", 30)

    assert live(app, mine) == set(mine)  # a's chunk was rolled back whole
    job = job_row(app, job_id)
    assert (job.deleted, job.failed, job.lease_holder) == (0, 0, "runner-b")


def test_a_chunk_decided_twice_is_reported_once(app: Flask, acme: Caller) -> None:
    # A runner read its chunk; before it decided, the same items were decided (by the
    # runner that took its lapsed lease over). Its decision must not report them again.
    mine = [acme.create(seed=n) for n in range(4)]
    job_id = new_job(app, mine)
    held = stores_of(app)
    runner_service.claim_next_job(held.db, "runner-a", 30)
    runner_service.resolve_manifest(held.db, job_id, "runner-a", max_media=100)
    positions = {media_id: n for n, media_id in enumerate(mine[:2])}
    stale = runner_service._record_chunk(job_id, "runner-a", positions, utcnow)
    runner_service.run_chunk(held.db, held.vectors, job_id, "runner-a", chunk_size=2)

    with pytest.raises(LeaseLost):
        delete_batch(held.db, held.vectors, owner=OWNER, media_ids=mine[:2], on_decided=stale)

    job = job_row(app, job_id)
    assert (job.deleted, job.failed) == (2, 0)  # not also counted failed NOT_FOUND
    statuses = item_statuses(app, job_id)
    assert [statuses[m] for m in mine] == ["deleted", "deleted", "pending", "pending"]
    assert live(app, mine) == set(mine[2:])


def test_the_runner_keeps_to_its_rate(app: Flask, acme: Caller) -> None:
    mine = [acme.create(seed=n) for n in range(60)]
    new_job(app, mine)
    runner = job_runner(app, chunk_size=10, max_media_per_second=100.0)

    started = time.monotonic()
    runner.run_once()
    took = time.monotonic() - started

    assert not live(app, mine)
    assert took >= 0.5  # 60 media at 100/s: 0.6 s, less the last chunk's pause at most
    print(f"\n60 media at 100/s took {took:.2f} s")


def test_vector_calls_hold_at_most_points_per_call(app: Flask, acme: Caller) -> None:
    mine = [acme.create(hd=4, ld=1, seed=n) for n in range(10)]
    new_job(app, mine)
    held = stores_of(app)
    recording = FlakyVectors(held.vectors)
    recording.failing = False
    runner = job_runner(app, chunk_size=10, points_per_call=7)
    runner.vectors = recording

    runner.run_once()

    sizes: dict[str, list[int]] = {}
    for _, space, count in recording.calls:
        sizes.setdefault(space, []).append(count)
    assert sizes == {"hd": [7, 7, 7, 7, 7, 5], "ld": [7, 3]}
    assert held.vectors.count("hd") == 0 and held.vectors.count("ld") == 0


def test_points_that_could_not_be_removed_are_left_to_the_reconciler(
    app: Flask, acme: Caller
) -> None:
    mine = [acme.create(seed=n) for n in range(3)]
    job_id = new_job(app, mine)
    runner = job_runner(app)
    runner.vectors = FlakyVectors(stores_of(app).vectors)

    runner.run_once()

    job = job_row(app, job_id)
    assert (job.status, job.deleted) == (JobStatus.DONE, 3)
    assert not live(app, mine)
    assert pending_cleanup_count(stores_of(app).db) == 3


def test_the_app_runs_jobs_in_the_background_and_stops_cleanly(tmp_path: Path) -> None:
    settings: dict[str, Any] = settings_for(
        tmp_path,
        "qdrant-local",
        JOB_RUNNER_ENABLED=True,
        JOB_POLL_INTERVAL_SECONDS=0.05,
        JOB_CHUNK_SIZE=2,
    )
    app = create_app(settings)
    try:
        _, secret = keys.create_key(stores_of(app).db, owner=OWNER)
        caller = Caller(app.test_client(), secret, app)
        mine = [caller.create(seed=n) for n in range(5)]
        response = caller.client.post(
            "/v1/deletion-jobs", json={"selection": mine}, headers=caller.headers
        )
        job_id = response.get_json()["data"]["job_id"]
        deadline = time.monotonic() + 20
        while job_row(app, job_id).status != JobStatus.DONE:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert job_row(app, job_id).deleted == 5
    finally:
        stores_of(app).close()
    assert stores_of(app).job_runner is None
