"""Idempotency-Keys in the service: the 24-hour window, and a batch whose process died."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta

import pytest
from sqlalchemy import func, select

from tests.unit.fakes import NOW, FakeVectors, add_media
from wickson_batch.db import Database
from wickson_batch.models import IdempotencyKey
from wickson_batch.services.cleanup import drain_cleanup, expire_idempotency_keys
from wickson_batch.services.deletion import BatchOutcome, delete_batch, get_operation
from wickson_batch.services.errors import IdempotencyKeyInUse
from wickson_batch.vectors.base import Space

DAY = timedelta(hours=24)


class Crash(BaseException):
    """Stands for the process dying: nothing in the service may catch it."""


class CrashingVectors(FakeVectors):
    def delete(self, space: Space, point_ids: Sequence[uuid.UUID]) -> None:
        raise Crash


def send(
    db: Database, vectors: FakeVectors, media_ids: list[str], at: datetime, key: str = "k"
) -> BatchOutcome:
    return delete_batch(
        db,
        vectors,
        owner="alice",
        media_ids=media_ids,
        api_key_id=1,
        idempotency_key=key,
        in_flight=timedelta(seconds=60),
        clock=lambda: at,
    )


def test_a_key_replays_until_24_hours_have_passed(db: Database, vectors: FakeVectors) -> None:
    add_media(db, vectors, "a", "alice", hd=1, ld=1)
    first = send(db, vectors, ["a"], NOW)

    late = send(db, vectors, ["a"], NOW + DAY - timedelta(seconds=1))

    assert late.replayed and late.operation_id == first.operation_id
    assert late.deleted_ids == ["a"]


def test_after_24_hours_the_key_is_new_again(db: Database, vectors: FakeVectors) -> None:
    add_media(db, vectors, "a", "alice", hd=1, ld=1)
    first = send(db, vectors, ["a"], NOW)

    later = send(db, vectors, ["a"], NOW + DAY)

    assert not later.replayed and later.operation_id != first.operation_id
    assert later.failed == {"a": "NOT_FOUND"}


def test_after_24_hours_another_body_is_accepted(db: Database, vectors: FakeVectors) -> None:
    add_media(db, vectors, "b", "alice", hd=1, ld=1)
    send(db, vectors, ["a"], NOW)

    later = send(db, vectors, ["b"], NOW + DAY + timedelta(seconds=1))

    assert later.deleted_ids == ["b"]


def test_the_reconciler_forgets_expired_keys_only(db: Database, vectors: FakeVectors) -> None:
    send(db, vectors, ["a"], NOW, key="old")
    send(db, vectors, ["a"], NOW + timedelta(hours=1), key="new")

    removed = expire_idempotency_keys(db, now=NOW + DAY + timedelta(minutes=1))

    assert removed == 1
    with db.unit_of_work() as uow:
        assert list(uow.session.scalars(select(IdempotencyKey.key))) == ["new"]


def test_a_batch_whose_process_died_is_in_use_then_reported_interrupted(
    db: Database, vectors: FakeVectors
) -> None:
    add_media(db, vectors, "a", "alice", hd=2, ld=1)
    add_media(db, vectors, "b", "alice", hd=1, ld=1)
    with pytest.raises(Crash):
        send(db, CrashingVectors(), ["a", "b", "x"], NOW)

    with pytest.raises(IdempotencyKeyInUse):
        send(db, vectors, ["a", "b", "x"], NOW + timedelta(seconds=30))
    interrupted = send(db, vectors, ["a", "b", "x"], NOW + timedelta(minutes=2))

    assert interrupted.replayed and interrupted.status == "interrupted"
    assert interrupted.deleted_ids == ["a", "b"]
    assert interrupted.failed == {"x": "NOT_FOUND"}
    assert interrupted.cleanup_pending == ["a", "b"]
    assert interrupted.vectors_removed == {"hd": 0, "ld": 0}
    with db.unit_of_work() as uow:
        assert uow.session.scalar(select(func.count()).select_from(IdempotencyKey)) == 1


def test_once_the_reconciler_has_run_an_interrupted_batch_reports_its_vectors_gone(
    db: Database, vectors: FakeVectors
) -> None:
    add_media(db, vectors, "a", "alice", hd=2, ld=1)
    with pytest.raises(Crash):
        send(db, CrashingVectors(), ["a"], NOW)

    drain_cleanup(db, vectors, grace=timedelta(0), now=NOW + timedelta(minutes=2))
    replayed = send(db, vectors, ["a"], NOW + timedelta(minutes=3))
    looked_up = get_operation(
        db,
        owner="alice",
        operation_id=replayed.operation_id,
        clock=lambda: NOW + timedelta(minutes=3),
    )

    assert vectors.points == {"hd": set(), "ld": set()}
    for outcome in (replayed, looked_up):
        assert outcome.status == "interrupted"
        assert outcome.cleanup_pending == []
        assert outcome.vectors_removed == {"hd": 2, "ld": 1}
