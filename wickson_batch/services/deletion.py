"""The batch-deletion protocol: SQL decides, then the vectors go, then the tasks close."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import structlog
from sqlalchemy import delete, insert, update

from ..db import Database
from ..models import CleanupTask, Media, MediaState, Operation, utcnow
from ..vectors.base import SPACES, Space, VectorIndex, point_ids_for
from .errors import FailureReason

log = structlog.get_logger("wickson_batch")


def new_operation_id() -> str:
    """Return a fresh, unguessable operation id."""
    return f"batch_delete_{uuid.uuid4().hex}"


@dataclass(frozen=True, slots=True)
class DeletedMedia:
    """A media whose row this batch deleted, with the point counts it was created with."""

    media_id: str
    hd_count: int
    ld_count: int

    def count(self, space: Space) -> int:
        """Return the number of points this media had in `space`."""
        return self.hd_count if space == "hd" else self.ld_count


@dataclass(slots=True)
class BatchOutcome:
    """Everything a batch response reports."""

    operation_id: str
    timestamp: datetime
    reason: str | None
    deleted: list[DeletedMedia]
    failed: dict[str, str]
    vectors_removed: dict[Space, int] = field(default_factory=lambda: {"hd": 0, "ld": 0})
    cleanup_pending: list[str] = field(default_factory=list)
    processing_time_ms: int = 0

    @property
    def deleted_ids(self) -> list[str]:
        """Return the deleted ids in request order."""
        return [item.media_id for item in self.deleted]


def _decide(
    db: Database,
    owner: str,
    api_key_id: int | None,
    media_ids: Sequence[str],
    reason: str | None,
    operation_id: str,
    now: datetime,
) -> tuple[list[DeletedMedia], dict[str, str]]:
    """Step 1: in one transaction, delete the caller's live rows and queue their cleanup."""
    with db.unit_of_work() as uow:
        statement = (
            delete(Media)
            .where(Media.id.in_(media_ids), Media.owner == owner, Media.state == MediaState.LIVE)
            .returning(Media.id, Media.hd_count, Media.ld_count)
            .execution_options(synchronize_session=False)
        )
        found = {row.id: row for row in uow.session.execute(statement)}
        deleted = [
            DeletedMedia(m, found[m].hd_count, found[m].ld_count) for m in media_ids if m in found
        ]
        failed = {m: FailureReason.NOT_FOUND for m in media_ids if m not in found}
        if deleted:
            uow.session.execute(
                insert(CleanupTask),
                [
                    {
                        "media_id": item.media_id,
                        "operation_id": operation_id,
                        "hd_count": item.hd_count,
                        "ld_count": item.ld_count,
                        "created_at": now,
                        "next_attempt_at": now,
                        "attempts": 0,
                    }
                    for item in deleted
                ],
            )
        uow.session.execute(
            insert(Operation).values(
                id=operation_id,
                owner=owner,
                api_key_id=api_key_id,
                reason=reason,
                created_at=now,
                requested=len(media_ids),
                deleted=len(deleted),
                failed=len(failed),
                result=_stored_result(deleted, failed, cleanup_pending=[]),
            )
        )
        uow.commit()
    return deleted, failed


def _stored_result(
    deleted: list[DeletedMedia], failed: dict[str, str], cleanup_pending: list[str]
) -> dict[str, Any]:
    return {
        "deleted": [item.media_id for item in deleted],
        "hd_vectors": sum(item.hd_count for item in deleted),
        "ld_vectors": sum(item.ld_count for item in deleted),
        "failed": failed,
        "cleanup_pending": cleanup_pending,
    }


def points_by_space(items: Sequence[DeletedMedia]) -> dict[Space, list[uuid.UUID]]:
    """Return the derived point ids of `items`, per space."""
    return {
        space: [
            pid for item in items for pid in point_ids_for(item.media_id, space, item.count(space))
        ]
        for space in SPACES
    }


def remove_points(vectors: VectorIndex, items: Sequence[DeletedMedia]) -> dict[Space, str | None]:
    """Delete every point of `items`, one call per collection; return each one's error or None."""
    errors: dict[Space, str | None] = {}
    for space, ids in points_by_space(items).items():
        try:
            vectors.delete(space, ids)
            errors[space] = None
        except Exception as error:  # whatever failed, the deletion already counts in SQL
            log.warning("vectors.delete_failed", space=space, points=len(ids), error=str(error))
            errors[space] = str(error) or type(error).__name__
    return errors


def _close_tasks(db: Database, operation_id: str) -> None:
    """Step 3: the points are gone; drop this operation's cleanup tasks."""
    try:
        with db.unit_of_work() as uow:
            uow.session.execute(delete(CleanupTask).where(CleanupTask.operation_id == operation_id))
            uow.commit()
    except Exception as error:  # the batch is decided; its answer must still reach the caller
        # The tasks stay and the reconciler repeats the (idempotent) point deletion.
        log.warning("cleanup.close_failed", operation_id=operation_id, error=str(error))


def _record_pending(db: Database, outcome: BatchOutcome) -> None:
    try:
        with db.unit_of_work() as uow:
            uow.session.execute(
                update(Operation)
                .where(Operation.id == outcome.operation_id)
                .values(
                    result=_stored_result(outcome.deleted, outcome.failed, outcome.cleanup_pending)
                )
            )
            uow.commit()
    except Exception as error:  # the batch is decided; its answer must still reach the caller
        log.warning("operation.update_failed", operation_id=outcome.operation_id, error=str(error))


def delete_batch(
    db: Database,
    vectors: VectorIndex,
    *,
    owner: str,
    media_ids: Sequence[str],
    reason: str | None = None,
    api_key_id: int | None = None,
    clock: Callable[[], datetime] = utcnow,
) -> BatchOutcome:
    """Delete the caller's media among `media_ids` (unique, in request order) and their points."""
    started = time.perf_counter()
    operation_id = new_operation_id()
    now = clock()
    deleted, failed = _decide(db, owner, api_key_id, media_ids, reason, operation_id, now)
    outcome = BatchOutcome(operation_id, now, reason, deleted, failed)
    if deleted:
        errors = remove_points(vectors, deleted)
        for space in SPACES:
            if errors[space] is None:
                outcome.vectors_removed[space] = sum(item.count(space) for item in deleted)
        if not any(errors.values()):
            _close_tasks(db, operation_id)
        else:
            outcome.cleanup_pending = outcome.deleted_ids
            _record_pending(db, outcome)
    outcome.processing_time_ms = round((time.perf_counter() - started) * 1000)
    log.info(
        "media.batch_delete",
        operation_id=operation_id,
        owner=owner,
        requested=len(media_ids),
        deleted=len(deleted),
        failed=len(failed),
        hd_vectors=outcome.vectors_removed["hd"],
        ld_vectors=outcome.vectors_removed["ld"],
        cleanup_pending=len(outcome.cleanup_pending),
        reason=reason,
        processing_time_ms=outcome.processing_time_ms,
    )
    return outcome
