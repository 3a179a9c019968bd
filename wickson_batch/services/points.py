"""A media's points: derived from its id and counts, queued for cleanup, removed by id.

What the deletion protocol hands to every other service that makes points go (a failed
creation, the reconciler, seeding): one home, so a media's points are found, queued and
removed the same way everywhere.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import structlog
from sqlalchemy import insert
from sqlalchemy.orm import Session

from ..models import CleanupTask
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
    session.execute(
        insert(CleanupTask),
        [
            {
                "media_id": item.media_id,
                "operation_id": operation_id,
                "hd_count": item.hd_count,
                "ld_count": item.ld_count,
                "created_at": created_at or now,
                "next_attempt_at": now,
                "attempts": 0,
            }
            for item in items
        ],
    )


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
