"""The deletion protocol on a fake vector store: fast checks of what the service asks for."""

from __future__ import annotations

from sqlalchemy import select

from tests.unit.fakes import NOW, FakeVectors, add_media
from wickson_batch.db import Database
from wickson_batch.models import CleanupTask, Media, MediaState, Operation
from wickson_batch.services.deletion import delete_batch
from wickson_batch.vectors.base import point_ids_for


def test_one_delete_call_per_collection_with_the_derived_ids(
    db: Database, vectors: FakeVectors
) -> None:
    add_media(db, vectors, "a", "alice", hd=2, ld=1)
    add_media(db, vectors, "b", "alice", hd=1, ld=3)

    delete_batch(db, vectors, owner="alice", media_ids=["a", "b"], clock=lambda: NOW)

    assert vectors.deletes == [
        ("hd", point_ids_for("a", "hd", 2) + point_ids_for("b", "hd", 1)),
        ("ld", point_ids_for("a", "ld", 1) + point_ids_for("b", "ld", 3)),
    ]


def test_no_vector_call_when_nothing_was_deleted(db: Database, vectors: FakeVectors) -> None:
    add_media(db, vectors, "theirs", "bob", hd=1, ld=1)

    outcome = delete_batch(db, vectors, owner="alice", media_ids=["theirs", "missing"])

    assert vectors.deletes == []
    assert outcome.failed == {"theirs": "NOT_FOUND", "missing": "NOT_FOUND"}


def test_pending_media_cannot_be_deleted_by_a_batch(db: Database, vectors: FakeVectors) -> None:
    with db.unit_of_work() as uow:
        uow.session.add(
            Media(id="p", owner="alice", state=MediaState.PENDING, hd_count=1, ld_count=0)
        )
        uow.commit()

    outcome = delete_batch(db, vectors, owner="alice", media_ids=["p"])

    assert outcome.failed == {"p": "NOT_FOUND"}


def test_operation_record_holds_the_decision_and_reason(db: Database, vectors: FakeVectors) -> None:
    add_media(db, vectors, "a", "alice", hd=2, ld=1)

    outcome = delete_batch(
        db,
        vectors,
        owner="alice",
        media_ids=["a", "x"],
        reason="gdpr",
        api_key_id=7,
        clock=lambda: NOW,
    )

    with db.unit_of_work() as uow:
        operation = uow.session.get(Operation, outcome.operation_id)
        assert operation is not None
        assert (operation.owner, operation.api_key_id, operation.reason) == ("alice", 7, "gdpr")
        assert (operation.requested, operation.deleted, operation.failed) == (2, 1, 1)
        assert operation.created_at == NOW
        assert operation.result == {
            "status": "completed",
            "deleted": [["a", 2, 1]],
            "hd_vectors": 2,
            "ld_vectors": 1,
            "failed": {"x": "NOT_FOUND"},
            "cleanup_pending": [],
            "processing_time_ms": outcome.processing_time_ms,
        }


def test_tasks_are_closed_once_the_points_are_gone(db: Database, vectors: FakeVectors) -> None:
    add_media(db, vectors, "a", "alice", hd=1, ld=1)

    delete_batch(db, vectors, owner="alice", media_ids=["a"])

    with db.unit_of_work() as uow:
        assert list(uow.session.scalars(select(CleanupTask))) == []


def test_failed_collection_keeps_the_tasks_and_records_them(
    db: Database, vectors: FakeVectors
) -> None:
    add_media(db, vectors, "a", "alice", hd=1, ld=1)
    vectors.fail_spaces = {"hd"}

    outcome = delete_batch(db, vectors, owner="alice", media_ids=["a"])

    assert outcome.cleanup_pending == ["a"]
    assert outcome.vectors_removed == {"hd": 0, "ld": 1}
    with db.unit_of_work() as uow:
        tasks = list(uow.session.scalars(select(CleanupTask)))
        assert [(t.media_id, t.hd_count, t.ld_count) for t in tasks] == [("a", 1, 1)]
        operation = uow.session.get(Operation, outcome.operation_id)
        assert operation is not None and operation.result["cleanup_pending"] == ["a"]
