"""Faults a user meets: one vector collection failing or timing out, the database dropping
mid-request, and the reconciler outlasting a long vector-store outage."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select
from werkzeug.test import TestResponse

from tests import servers
from tests.faults import DatabaseOutage, FlakyVectors, timed_out
from tests.helpers import Caller, body, settings_of, stores_of, unknown_id, vector
from wickson_batch.models import CleanupTask, IdempotencyKey, Media, Operation, utcnow
from wickson_batch.services import cleanup, deletion
from wickson_batch.services.stores import Stores
from wickson_batch.vectors.base import Space, VectorStoreError

UNAVAILABLE = "The database is unavailable; nothing was changed. Retry later."
OTHER: dict[Space, Space] = {"hd": "ld", "ld": "hd"}


def points(app: Flask, media_id: str) -> dict[Space, int]:
    vectors = stores_of(app).vectors
    return {"hd": vectors.count("hd", media_id), "ld": vectors.count("ld", media_id)}


def task_rows(held: Stores) -> list[tuple[str, int, datetime]]:
    """Return each cleanup task's media, attempts and next attempt, oldest first."""
    with held.db.unit_of_work() as uow:
        rows = uow.session.execute(
            select(
                CleanupTask.media_id, CleanupTask.attempts, CleanupTask.next_attempt_at
            ).order_by(CleanupTask.id)
        )
        return [(row[0], row[1], row[2]) for row in rows]


def snapshot(app: Flask) -> dict[str, Any]:
    """Return everything a batch could change, in both stores."""
    held = stores_of(app)
    with held.db.unit_of_work() as uow:
        session = uow.session
        counts = {
            table.__tablename__: session.scalar(select(func.count()).select_from(table))
            for table in (Operation, CleanupTask, IdempotencyKey)
        }
        media = sorted(session.scalars(select(Media.id)))
    return {
        "media": media,
        **counts,
        "hd_points": held.vectors.count("hd"),
        "ld_points": held.vectors.count("ld"),
    }


def drain_when_due(held: Stores, vectors: Any, at: datetime) -> cleanup.DrainReport:
    """Run one reconciler round at `at`, as the server's timer would."""
    reconciler = cleanup.Reconciler(held.db, vectors, interval=1, grace=0, clock=lambda: at)
    return reconciler.run_once()


def assert_consistent(held: Stores) -> None:
    """Every live media has all its points, no point lacks its media, no task is left."""
    report = cleanup.check_consistency(held.db, held.vectors)
    assert report.consistent, report
    assert report.pending_cleanup == 0
    assert report.orphan_points == {"hd": 0, "ld": 0}
    assert cleanup.remove_orphans(held.db, held.vectors) == {"hd": 0, "ld": 0}


# One collection failing or timing out


FAULTS: dict[str, Callable[[str], Exception]] = {"error": VectorStoreError, "timeout": timed_out}


@pytest.mark.parametrize("fault", sorted(FAULTS))
@pytest.mark.parametrize("failing", ["hd", "ld"])
def test_one_collection_failing_deletes_the_records_and_the_reconciler_finishes(
    alice: Caller, app: Flask, failing: Space, fault: str
) -> None:
    held = stores_of(app)
    working = OTHER[failing]
    ids = [alice.create(hd=3, ld=2, seed=n) for n in range(2)]
    kept = alice.create(hd=1, ld=1, seed=9)
    missing = unknown_id()
    real = held.vectors
    held.vectors = FlakyVectors(real, spaces=(failing,), error=FAULTS[fault], delay=0.05)

    response = alice.delete_batch([*ids, missing], reason="outdated_content")

    assert response.status_code == 200
    payload = body(response)
    assert payload["message"] == "Batch deletion completed: 2 deleted, 1 failed"
    removed = {"hd": 6, "ld": 4}
    assert payload["data"] == {
        "deleted": {
            "count": 2,
            "media_ids": ids,
            f"{working}_vectors": removed[working],
            f"{failing}_vectors": 0,
            "cleanup_pending": ids,
        },
        "failed": {"count": 1, "media_ids": [missing], "reasons": {missing: "NOT_FOUND"}},
    }
    assert payload["metadata"]["reason"] == "outdated_content"
    # The records are gone for every reader; only the failing collection still holds points.
    assert [alice.get(m).status_code for m in ids] == [404, 404]
    dims = settings_of(app).hd_dim if failing == "hd" else settings_of(app).ld_dim
    hits = body(alice.search(vector(dims, 0), space=failing))["data"]["results"]
    assert [hit["media_id"] for hit in hits] == [kept]
    expected_left = {failing: 3 if failing == "hd" else 2, working: 0}
    assert [points(app, m) for m in ids] == [expected_left, expected_left]
    assert points(app, kept) == {"hd": 1, "ld": 1}
    assert [row[:2] for row in task_rows(held)] == [(m, 0) for m in ids]
    lookup = body(
        alice.client.get(
            f"/v1/operations/{payload['metadata']['operation_id']}", headers=alice.headers
        )
    )
    assert lookup["data"] == payload["data"]
    assert lookup["metadata"]["status"] == "completed"

    # The store still fails: a reconciler round keeps the tasks and the points.
    later = utcnow() + timedelta(seconds=1)
    assert drain_when_due(held, held.vectors, later).tasks_failed == 2
    assert [points(app, m) for m in ids] == [expected_left, expected_left]

    # The store is back: the next due round finishes the job.
    held.vectors = real
    report = drain_when_due(held, real, later + cleanup.backoff(1))

    assert (report.tasks_done, report.tasks_failed) == (2, 0)
    assert [points(app, m) for m in ids] == [{"hd": 0, "ld": 0}] * 2
    assert points(app, kept) == {"hd": 1, "ld": 1}
    assert alice.get(kept).status_code == 200
    assert_consistent(held)


# The database failing mid-request


def send_batch(caller: Caller, media_ids: list[str], key: str) -> TestResponse:
    return caller.client.delete(
        "/v1/media/batch",
        json={"media_ids": media_ids, "reason": "cleanup"},
        headers={**caller.headers, "Idempotency-Key": key},
    )


@pytest.mark.parametrize("at", ["statement", "commit"])
def test_database_failing_mid_batch_is_503_changes_nothing_and_the_retry_works(
    alice: Caller, app: Flask, at: str
) -> None:
    held = stores_of(app)
    ids = [alice.create(hd=2, ld=1, seed=n) for n in range(2)]
    missing = unknown_id()
    before = snapshot(app)
    outage = DatabaseOutage(held.db.engine, at=at)

    with outage.active():
        response = send_batch(alice, [*ids, missing], key="retry-me-1")

    assert outage.failures == 1
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "2"
    payload = body(response)
    assert payload == {
        "success": False,
        "message": UNAVAILABLE,
        "error": {
            "code": "SERVICE_UNAVAILABLE",
            "details": {"request_id": response.headers["X-Request-ID"]},
        },
    }
    assert b"injected" not in response.data and b"DELETE" not in response.data
    # Nothing changed: no row, operation, task or claimed key; every point still there.
    assert snapshot(app) == before
    assert [alice.get(m).status_code for m in ids] == [200, 200]
    assert [points(app, m) for m in ids] == [{"hd": 2, "ld": 1}] * 2

    # The database is back: the same request, with the same Idempotency-Key, now deletes.
    retry = send_batch(alice, [*ids, missing], key="retry-me-1")

    assert retry.status_code == 200
    assert "Idempotent-Replayed" not in retry.headers
    assert body(retry)["data"] == {
        "deleted": {"count": 2, "media_ids": ids, "hd_vectors": 4, "ld_vectors": 2},
        "failed": {"count": 1, "media_ids": [missing], "reasons": {missing: "NOT_FOUND"}},
    }
    assert [alice.get(m).status_code for m in ids] == [404, 404]
    assert [points(app, m) for m in ids] == [{"hd": 0, "ld": 0}] * 2
    assert_consistent(held)


# The reconciler through a long vector-store outage


def test_reconciler_backs_off_through_repeated_failures_and_finishes(
    alice: Caller, app: Flask
) -> None:
    held = stores_of(app)
    ids = [alice.create(hd=2, ld=1, seed=n) for n in range(3)]
    flaky = FlakyVectors(held.vectors)
    started = utcnow()
    outcome = deletion.delete_batch(
        held.db, flaky, owner="alice", media_ids=ids, clock=lambda: started
    )
    assert outcome.cleanup_pending == ids

    # Eight rounds in a row fail, each run exactly when the tasks fall due.
    now = started
    delays: list[float] = []
    for attempt in range(1, 9):
        calls = len(flaky.calls)
        report = drain_when_due(held, flaky, now)
        assert (report.tasks_done, report.tasks_failed) == (0, 3)
        assert len(flaky.calls) == calls + 2  # one call per collection for all due tasks
        rows = task_rows(held)
        assert {row[1] for row in rows} == {attempt}
        (due,) = {row[2] for row in rows}
        delays.append((due - now).total_seconds())
        # Just before they fall due again, a round leaves them and the store alone.
        calls = len(flaky.calls)
        assert drain_when_due(held, flaky, due - timedelta(milliseconds=1)).tasks_failed == 0
        assert len(flaky.calls) == calls
        now = due

    assert delays == [2, 4, 8, 16, 32, 64, 128, 256]
    assert cleanup.backoff(9) == cleanup.backoff(50) == timedelta(seconds=300)  # capped
    assert [points(app, m) for m in ids] == [{"hd": 2, "ld": 1}] * 3
    assert [alice.get(m).status_code for m in ids] == [404] * 3

    flaky.failing = False
    report = drain_when_due(held, flaky, now)

    assert (report.tasks_done, report.tasks_failed) == (3, 0)
    assert task_rows(held) == []
    assert [points(app, m) for m in ids] == [{"hd": 0, "ld": 0}] * 3
    assert_consistent(held)


def test_reconciler_thread_outlives_database_failures_and_then_drains(
    alice: Caller, app: Flask
) -> None:
    held = stores_of(app)
    ids = [alice.create(hd=2, ld=1, seed=n) for n in range(2)]
    real = held.vectors
    outcome = deletion.delete_batch(held.db, FlakyVectors(real), owner="alice", media_ids=ids)
    assert outcome.cleanup_pending == ids
    # Every round starts by deleting stale pending media rows: fail that statement.
    outage = DatabaseOutage(held.db.engine, at="statement")
    reconciler = cleanup.Reconciler(held.db, real, interval=0.01, grace=0)

    try:
        with outage.active():
            reconciler.start()
            deadline = time.monotonic() + 10
            while outage.failures < 3 and time.monotonic() < deadline:
                time.sleep(0.01)
            assert outage.failures >= 3
            assert cleanup.pending_cleanup_count(held.db) == 2
        deadline = time.monotonic() + 10
        while cleanup.pending_cleanup_count(held.db) and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        reconciler.stop()

    assert cleanup.pending_cleanup_count(held.db) == 0
    assert [points(app, m) for m in ids] == [{"hd": 0, "ld": 0}] * 2
    assert_consistent(held)


def test_readyz_is_503_with_retry_after_when_the_database_does_not_answer(
    app: Flask, client: FlaskClient
) -> None:
    outage = DatabaseOutage(stores_of(app).db.engine, at="statement", statement_prefix="SELECT 1")

    with outage.active():
        response = client.get("/readyz")

    assert response.status_code == 503
    assert response.headers["Retry-After"] == "2"
    assert body(response)["error"]["details"]["checks"] == {
        "database": "unavailable",
        "vectors": "ok",
        "rate_limits": "ok" if servers.SERVER_PASS else "memory",
    }
    assert client.get("/readyz").status_code == 200
