"""The deletion protocol on a fake vector store: fast checks of what the service asks for."""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import select

from wickson_batch.db import Database
from wickson_batch.models import CleanupTask, Media, MediaState, Operation
from wickson_batch.services.deletion import delete_batch
from wickson_batch.vectors.base import (
    Hit,
    Space,
    StoredPoint,
    VectorPoint,
    VectorStoreError,
    point_ids_for,
)

NOW = datetime(2026, 3, 9, 12, 34, 56, tzinfo=UTC)


class FakeVectors:
    """Records every call; holds point ids per space; can fail deletes in chosen spaces."""

    def __init__(self) -> None:
        self.dims: dict[Space, int] = {"hd": 2, "ld": 2}
        self.points: dict[Space, set[uuid.UUID]] = {"hd": set(), "ld": set()}
        self.deletes: list[tuple[Space, list[uuid.UUID]]] = []
        self.fail_spaces: set[Space] = set()

    def ensure(self) -> None: ...

    def upsert(self, space: Space, points: Sequence[VectorPoint]) -> None:
        self.points[space].update(p.id for p in points)

    def delete(self, space: Space, point_ids: Sequence[uuid.UUID]) -> None:
        self.deletes.append((space, list(point_ids)))
        if space in self.fail_spaces:
            raise VectorStoreError("down")
        self.points[space].difference_update(point_ids)

    def count(self, space: Space, media_id: str | None = None) -> int:
        return len(self.points[space])

    def search(self, space: Space, vector: Sequence[float], owner: str, limit: int) -> list[Hit]:
        return []

    def scan(self, space: Space, batch_size: int = 1000) -> Iterator[list[StoredPoint]]:
        return iter([])

    def ping(self) -> None: ...

    def flush(self) -> None: ...

    def close(self) -> None: ...


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    database = Database(f"sqlite:///{tmp_path / 'unit.db'}")
    database.upgrade_schema()
    yield database
    database.dispose()


@pytest.fixture
def vectors() -> FakeVectors:
    return FakeVectors()


def add_media(
    db: Database, vectors: FakeVectors, media_id: str, owner: str, hd: int, ld: int
) -> None:
    with db.unit_of_work() as uow:
        uow.session.add(
            Media(
                id=media_id,
                owner=owner,
                state=MediaState.LIVE,
                hd_count=hd,
                ld_count=ld,
                created_at=NOW,
            )
        )
        uow.commit()
    vectors.points["hd"].update(point_ids_for(media_id, "hd", hd))
    vectors.points["ld"].update(point_ids_for(media_id, "ld", ld))


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
