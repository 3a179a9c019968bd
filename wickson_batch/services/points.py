"""A media's points: derived from its id and counts, queued for cleanup, removed by id.

What the deletion protocol hands to every other service that makes points go (a failed
creation, the reconciler, seeding): one home, so a media's points are found, queued and
removed the same way everywhere.
"""

from __future__ import annotations

import functools
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

import structlog
from sqlalchemy import DateTime, Table, bindparam, insert
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import Session
from sqlalchemy.types import TypeDecorator

from ..models import CleanupTask, UtcDateTime
from ..vectors.base import SPACES, Space, VectorIndex, point_ids_for

log = structlog.get_logger("wickson_batch")


@dataclass(frozen=True, slots=True)
class MediaPoints:
    """A media id with the number of points it was created with in each space."""

    media_id: str
    hd_count: int
    ld_count: int

    def count(self, space: Space) -> int:
        """Return the number of points this media has in `space`."""
        return self.hd_count if space == "hd" else self.ld_count


def points_by_space(items: Sequence[MediaPoints]) -> dict[Space, list[uuid.UUID]]:
    """Return the derived point ids of `items`, per space."""
    return {
        space: [
            pid for item in items for pid in point_ids_for(item.media_id, space, item.count(space))
        ]
        for space in SPACES
    }


def queue_cleanup(
    session: Session,
    items: Sequence[MediaPoints],
    operation_id: str,
    now: datetime,
    *,
    created_at: datetime | None = None,
) -> None:
    """Add a cleanup task per media to `session`'s transaction: its points are to go.

    A task is left alone until it is older than the reconciler's grace period (a request
    may still be removing the points itself); `created_at` in the past makes it due at once.
    """
    # A Core executemany on the table, not the ORM's bulk insert of the mapped class, and
    # the two timestamps converted for the database once per batch, not once per row:
    # the same rows, at a quarter of the ORM's cost for 100 of them (docs/performance.md).
    stamp = _timestamp_processor(session.get_bind().dialect)
    created, due = stamp(created_at or now), stamp(now)
    session.execute(
        _INSERT_TASKS,
        [
            {
                "media_id": item.media_id,
                "operation_id": operation_id,
                "hd_count": item.hd_count,
                "ld_count": item.ld_count,
                "task_created_at": created,
                "task_due_at": due,
            }
            for item in items
        ],
    )


class _Converted(TypeDecorator[Any]):
    """A UtcDateTime value already converted for the driver: sent as it is."""

    impl = DateTime
    cache_ok = True

    def bind_processor(self, dialect: Dialect) -> None:
        return None


# The timestamps arrive converted (by UtcDateTime's own bind processor, once per batch),
# so that SQLAlchemy passes them through untouched on every row.
_INSERT_TASKS = insert(cast(Table, CleanupTask.__table__)).values(
    created_at=bindparam("task_created_at", type_=_Converted()),
    next_attempt_at=bindparam("task_due_at", type_=_Converted()),
    attempts=0,
)


@functools.cache
def _timestamp_processor(dialect: Dialect) -> Callable[[datetime], Any]:
    """Return how a UtcDateTime value is sent to `dialect`'s driver (itself if unchanged)."""
    processor = UtcDateTime().bind_processor(dialect)
    if processor is None:  # pragma: no cover - UtcDateTime always converts
        return lambda value: value
    return processor


def remove_points(
    vectors: VectorIndex, items: Sequence[MediaPoints], max_per_call: int | None = None
) -> dict[Space, str | None]:
    """Delete every point of `items`, one call per collection; return each one's error or None.

    With `max_per_call`, a collection's points go in calls of at most that many ids: the
    embedded engine holds the GIL for a whole call, so a large one stalls every request.
    The first failed call of a collection stops it (the rest stays for the reconciler).
    """
    errors: dict[Space, str | None] = {}
    for space, ids in points_by_space(items).items():
        calls = [ids]
        if max_per_call is not None:
            calls = [ids[n : n + max_per_call] for n in range(0, len(ids), max_per_call)]
        try:
            for call in calls:
                vectors.delete(space, call)
            errors[space] = None
        except Exception as error:  # whatever failed, the deletion already counts in SQL
            log.warning("vectors.delete_failed", space=space, points=len(ids), error=str(error))
            errors[space] = str(error) or type(error).__name__
    return errors
