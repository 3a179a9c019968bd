"""A connection lost at the deciding commit: the answer is what the database holds."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from sqlalchemy import event, select
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from tests.unit.fakes import FakeVectors, add_media
from wickson_batch.db import Database, DatabaseUnavailable
from wickson_batch.models import Media, Operation
from wickson_batch.services import deletion
from wickson_batch.services.deletion import delete_batch
from wickson_batch.services.errors import DecisionUnknown


def _lost() -> OperationalError:
    return OperationalError(
        "COMMIT",
        {},
        Exception("server closed the connection unexpectedly"),
        connection_invalidated=True,
    )


@contextmanager
def _lose_connection(db: Database, *, when: str, times: int = 1) -> Iterator[list[int]]:
    """Raise a lost-connection error from the next `times` commits, after or before them."""
    fired: list[int] = []

    def fail(_session: Session, *_args: Any) -> None:
        if len(fired) < times:
            fired.append(1)
            raise _lost()

    event.listen(db.sessions, when, fail)
    try:
        yield fired
    finally:
        event.remove(db.sessions, when, fail)


def _ids(db: Database) -> tuple[set[str], set[str]]:
    with db.unit_of_work() as uow:
        media = set(uow.session.scalars(select(Media.id)))
        operations = set(uow.session.scalars(select(Operation.id)))
    return media, operations


def test_commit_applied_but_its_answer_lost_goes_on_and_answers_normally(
    db: Database, vectors: FakeVectors
) -> None:
    add_media(db, vectors, "a", "alice", hd=1, ld=1)
    with _lose_connection(db, when="after_commit") as fired:
        outcome = delete_batch(db, vectors, owner="alice", media_ids=["a", "missing"])

    assert fired == [1]
    assert outcome.deleted_ids == ["a"]
    assert outcome.failed == {"missing": "NOT_FOUND"}
    assert [space for space, _ids in vectors.deletes] == ["hd", "ld"]
    media, operations = _ids(db)
    assert media == set()
    assert operations == {outcome.operation_id}


def test_commit_not_applied_is_a_503_and_nothing_changed(
    db: Database, vectors: FakeVectors
) -> None:
    add_media(db, vectors, "a", "alice", hd=1, ld=1)
    with _lose_connection(db, when="before_commit"), pytest.raises(DatabaseUnavailable) as info:
        delete_batch(db, vectors, owner="alice", media_ids=["a"])

    assert not isinstance(info.value, DecisionUnknown)
    assert vectors.deletes == []
    assert _ids(db) == ({"a"}, set())


def test_decision_unreadable_is_unknown_naming_the_operation(
    db: Database, vectors: FakeVectors, monkeypatch: pytest.MonkeyPatch
) -> None:
    add_media(db, vectors, "a", "alice", hd=1, ld=1)
    monkeypatch.setattr(deletion, "REREAD_PAUSE_SECONDS", 0.0)
    original = deletion._decided
    asked: list[str] = []

    def unreadable(database: Database, operation_id: str) -> bool | None:
        asked.append(operation_id)
        # Every re-read fails as the database is still cut.
        with _lose_connection(database, when="after_begin", times=deletion.REREAD_ATTEMPTS):
            return original(database, operation_id)

    monkeypatch.setattr(deletion, "_decided", unreadable)
    with _lose_connection(db, when="after_commit"), pytest.raises(DecisionUnknown) as info:
        delete_batch(db, vectors, owner="alice", media_ids=["a"])

    assert info.value.operation_id == asked[0]
    assert vectors.deletes == []  # never a guess: no point goes while the outcome is unknown
    assert _ids(db) == (set(), {asked[0]})  # it was in fact committed; the reconciler finishes
