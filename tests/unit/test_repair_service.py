"""Repairing live media whose points are gone, on a fake vector store."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

from sqlalchemy import select

from tests.unit.fakes import NOW, FakeVectors, add_media
from wickson_batch.db import Database
from wickson_batch.models import CleanupTask, Media, MediaState, Operation
from wickson_batch.services.cleanup import find_missing_points, repair_missing_points
from wickson_batch.vectors.base import Space, StoredPoint, point_ids_for

GRACE = timedelta(seconds=60)
LATER = NOW + timedelta(minutes=5)


def lose(vectors: FakeVectors, media_id: str, space: Space, count: int) -> None:
    """Drop a media's first `count` points in one space, as a lost write would."""
    vectors.points[space].difference_update(point_ids_for(media_id, space, count))


def live_ids(db: Database) -> set[str]:
    with db.unit_of_work() as uow:
        return set(uow.session.scalars(select(Media.id).where(Media.state == MediaState.LIVE)))


def operations(db: Database) -> list[tuple[str, str, int | None, list[str]]]:
    with db.unit_of_work() as uow:
        rows = uow.session.scalars(select(Operation).order_by(Operation.owner))
        return [
            (op.owner, op.reason or "", op.api_key_id, [d[0] for d in op.result["deleted"]])
            for op in rows
        ]


def test_names_the_short_media_with_found_and_expected_counts(
    db: Database, vectors: FakeVectors
) -> None:
    add_media(db, vectors, "a", "alice", hd=2, ld=1)
    add_media(db, vectors, "b", "alice", hd=2, ld=1)
    lose(vectors, "a", "hd", 2)

    found = find_missing_points(db, vectors, grace=GRACE, now=LATER).found

    assert [m.describe() for m in found] == ["a hd 0/2 ld 1/1"]


def test_repair_deletes_only_the_short_media_one_operation_per_owner_and_chunk(
    db: Database, vectors: FakeVectors
) -> None:
    owners = {"a1": "a", "a2": "a", "a3": "a", "b1": "b", "ok": "a"}
    for media_id, owner in owners.items():
        add_media(db, vectors, media_id, owner, hd=2, ld=1)
    for media_id in ("a1", "a2", "a3"):
        lose(vectors, media_id, "hd", 1)
    lose(vectors, "b1", "ld", 1)

    report = repair_missing_points(db, vectors, grace=GRACE, max_batch=2, now=LATER)

    assert report.repaired == 4
    assert len(report.operation_ids) == 3
    assert live_ids(db) == {"ok"}
    assert operations(db) == [
        ("a", "repair:missing_points", None, ["a1", "a2"]),
        ("a", "repair:missing_points", None, ["a3"]),
        ("b", "repair:missing_points", None, ["b1"]),
    ]
    assert vectors.count("hd", "ok") == 2
    assert vectors.count("hd", "a1") == vectors.count("ld", "a1") == 0
    with db.unit_of_work() as uow:
        assert uow.session.scalars(select(CleanupTask)).all() == []


def test_media_younger_than_the_grace_are_counted_not_repaired(
    db: Database, vectors: FakeVectors
) -> None:
    add_media(db, vectors, "young", "alice", hd=2, ld=1)
    lose(vectors, "young", "hd", 2)

    report = repair_missing_points(db, vectors, grace=GRACE, max_batch=100, now=NOW)

    assert (report.repaired, report.too_young, report.operation_ids) == (0, 1, [])
    assert live_ids(db) == {"young"}
    assert operations(db) == []


def test_pending_media_are_never_candidates(db: Database, vectors: FakeVectors) -> None:
    with db.unit_of_work() as uow:
        uow.session.add(
            Media(
                id="p",
                owner="alice",
                state=MediaState.PENDING,
                hd_count=1,
                ld_count=0,
                created_at=NOW,
            )
        )
        uow.commit()

    report = repair_missing_points(db, vectors, grace=GRACE, max_batch=100, now=LATER)

    assert (report.found, report.too_young, report.operation_ids) == ([], 0, [])


class ScannedTooEarly(FakeVectors):
    """A scan that misses one media's points, as if they were written just after it."""

    def __init__(self, hidden: str) -> None:
        super().__init__()
        self.hidden = hidden

    def scan(self, space: Space, batch_size: int = 1000) -> Iterator[list[StoredPoint]]:
        for page in super().scan(space, batch_size):
            yield [point for point in page if point.media_id != self.hidden]


def test_a_media_whose_points_are_there_when_recounted_is_left_alone(db: Database) -> None:
    vectors = ScannedTooEarly("late")
    add_media(db, vectors, "late", "alice", hd=2, ld=1)
    add_media(db, vectors, "lost", "alice", hd=2, ld=1)
    lose(vectors, "lost", "ld", 1)

    report = repair_missing_points(db, vectors, grace=GRACE, max_batch=100, now=LATER)

    assert [m.media_id for m in report.found] == ["late", "lost"]
    assert (report.recovered, report.repaired) == (1, 1)
    assert live_ids(db) == {"late"}
    assert operations(db) == [("alice", "repair:missing_points", None, ["lost"])]
