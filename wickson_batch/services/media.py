"""Create, read and search media; reads always check the SQL truth."""

from __future__ import annotations

import json
import math
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import structlog
from sqlalchemy import delete, select, tuple_, update

from ..db import Database
from ..models import CleanupTask, Media, MediaState, utcnow
from ..vectors.base import SPACES, Hit, Space, VectorIndex, VectorPoint, VectorStoreError, point_id
from .errors import STORE_ERRORS, InvalidVectors, MediaNotFound
from .paging import Position, decode_cursor, encode_cursor
from .points import MediaPoints, queue_cleanup, remove_points
from .selection import MediaFilter, filter_clause

log = structlog.get_logger("wickson_batch")

# How far a search over-fetches points to find `limit` distinct live media.
SEARCH_FETCH_FACTOR = 4
SEARCH_FETCH_MAX = 4096


@dataclass(frozen=True, slots=True)
class MediaView:
    """A live media as the API shows it."""

    media_id: str
    title: str | None
    metadata: dict[str, Any] | None
    hd_vectors: int
    ld_vectors: int
    created_at: datetime


def new_media_id() -> str:
    """Return a fresh server-made media id."""
    return f"vec-{uuid.uuid4().hex}"


def _view(media: Media) -> MediaView:
    return MediaView(
        media.id, media.title, media.metadata_, media.hd_count, media.ld_count, media.created_at
    )


def check_vector(vector: Sequence[float], dim: int, field: str, label: str) -> None:
    """Raise InvalidVectors unless `vector` has `dim` finite values."""
    if len(vector) != dim:
        raise InvalidVectors(
            f"{label} has {len(vector)} dimensions; this service stores {dim}", field
        )
    if not all(math.isfinite(value) for value in vector):
        raise InvalidVectors(f"{label} holds a value that is not finite", field)


def _points(
    media_id: str, owner: str, space: Space, vectors: Sequence[Sequence[float]]
) -> list[VectorPoint]:
    return [
        VectorPoint(point_id(media_id, space, index), vector, media_id, owner)
        for index, vector in enumerate(vectors)
    ]


def create_media(
    db: Database,
    vectors: VectorIndex,
    *,
    owner: str,
    hd_vectors: Sequence[Sequence[float]],
    ld_vectors: Sequence[Sequence[float]],
    title: str | None = None,
    metadata: dict[str, Any] | None = None,
    clock: Callable[[], datetime] = utcnow,
) -> MediaView:
    """Write a media row as `pending`, its points, then mark it `live`."""
    if not hd_vectors and not ld_vectors:
        raise InvalidVectors(
            "a media needs at least one vector in hd_vectors or ld_vectors", "hd_vectors"
        )
    by_space: dict[Space, Sequence[Sequence[float]]] = {"hd": hd_vectors, "ld": ld_vectors}
    for space in SPACES:
        for index, vector in enumerate(by_space[space]):
            field = f"{space}_vectors"
            check_vector(vector, vectors.dims[space], field, f"{field}[{index}]")
    counts = {"hd_count": len(hd_vectors), "ld_count": len(ld_vectors)}
    media = Media(
        id=new_media_id(),
        owner=owner,
        state=MediaState.PENDING,
        title=title,
        metadata_=metadata,
        **counts,
        created_at=clock(),
    )
    with db.unit_of_work() as uow:
        uow.session.add(media)
        uow.commit()
    try:
        for space in SPACES:
            if by_space[space]:
                vectors.upsert(space, _points(media.id, owner, space, by_space[space]))
        # Durable before the media is acknowledged: power loss must not leave it live
        # without its points (a lost deletion, by contrast, only leaves orphans to scan).
        vectors.flush()
        with db.unit_of_work() as uow:
            marked = uow.session.execute(
                update(Media)
                .where(Media.id == media.id, Media.state == MediaState.PENDING)
                .values(state=MediaState.LIVE)
            )
            if marked.rowcount != 1:  # type: ignore[attr-defined]
                raise VectorStoreError("the media was removed while its vectors were written")
            uow.commit()
    except STORE_ERRORS:
        abandon_creations(db, vectors, [MediaPoints(media.id, **counts)], clock=clock)
        raise
    return _view(media)


def abandon_creations(
    db: Database,
    vectors: VectorIndex,
    items: Sequence[MediaPoints],
    *,
    clock: Callable[[], datetime] = utcnow,
) -> None:
    """Undo creations that failed after their rows were written, leaving no point behind.

    In one transaction the rows still `pending` go, and a cleanup task is queued for the
    points of every media that is not live, whoever removed its row: a reconciler that found
    it stale may have drained its points before the last of them landed. A media already
    live is left alone (marking it live did commit; only the acknowledgement was lost).
    The points are then removed at once if the store answers, else by the reconciler.
    """
    ids = [item.media_id for item in items]
    operation_id = f"abandon_{uuid.uuid4().hex}"
    try:
        with db.unit_of_work() as uow:
            uow.session.execute(
                delete(Media).where(Media.id.in_(ids), Media.state == MediaState.PENDING)
            )
            live = set(
                uow.session.scalars(
                    select(Media.id).where(Media.id.in_(ids), Media.state == MediaState.LIVE)
                )
            )
            gone = [item for item in items if item.media_id not in live]
            if gone:
                queue_cleanup(uow.session, gone, operation_id, clock())
            uow.commit()
        if gone and not any(remove_points(vectors, gone).values()):
            with db.unit_of_work() as uow:
                uow.session.execute(
                    delete(CleanupTask).where(CleanupTask.operation_id == operation_id)
                )
                uow.commit()
    except STORE_ERRORS as error:  # rows left pending are the reconciler's after the grace
        log.warning("media.abandon_failed", media_ids=ids[:10], error=str(error))


def get_media(db: Database, *, owner: str, media_id: str) -> MediaView:
    """Return a live media of this owner, or raise MediaNotFound."""
    with db.unit_of_work() as uow:
        media = uow.session.execute(
            select(Media).where(
                Media.id == media_id, Media.owner == owner, Media.state == MediaState.LIVE
            )
        ).scalar_one_or_none()
    if media is None:
        raise MediaNotFound(media_id)
    return _view(media)


@dataclass(frozen=True, slots=True)
class MediaPage:
    """One page of a listing, and the cursor of the next (None on the last page)."""

    items: list[MediaView]
    next_cursor: str | None

    @property
    def has_more(self) -> bool:
        return self.next_cursor is not None


def _listing_scope(owner: str, media_filter: MediaFilter) -> str:
    """What a listing's cursor is bound to: its owner and its filter."""
    return json.dumps(["media", owner, media_filter.to_json()], sort_keys=True)


def list_media(
    db: Database,
    *,
    owner: str,
    media_filter: MediaFilter,
    limit: int,
    cursor: str | None = None,
) -> MediaPage:
    """Return a page of this owner's live media matching the filter, oldest first.

    Keyset paging on (created_at, id): a page starts right after the last item of the one
    before, so paging to the end returns each media that stayed live throughout exactly
    once, whatever is created or deleted meanwhile. Raises InvalidCursor for a cursor of
    another listing or one that was edited.
    """
    scope = _listing_scope(owner, media_filter)
    query = select(Media).where(filter_clause(owner, media_filter))
    if cursor is not None:
        after = decode_cursor(cursor, scope)
        query = query.where(tuple_(Media.created_at, Media.id) > (after.created_at, after.id))
    query = query.order_by(Media.created_at, Media.id).limit(limit + 1)
    with db.unit_of_work() as uow:
        rows = list(uow.session.scalars(query))
    page = rows[:limit]
    next_cursor = None
    if len(rows) > limit:
        last = page[-1]
        next_cursor = encode_cursor(scope, Position(last.created_at, last.id))
    return MediaPage([_view(row) for row in page], next_cursor)


def live_ids(db: Database, owner: str, media_ids: Sequence[str]) -> set[str]:
    """Return which of `media_ids` are live media of this owner."""
    if not media_ids:
        return set()
    with db.unit_of_work() as uow:
        rows = uow.session.execute(
            select(Media.id).where(
                Media.id.in_(media_ids), Media.owner == owner, Media.state == MediaState.LIVE
            )
        )
        return {row[0] for row in rows}


def _distinct(hits: list[Hit]) -> list[Hit]:
    best: dict[str, Hit] = {}
    for hit in hits:  # hits come best first, so the first per media is its best
        best.setdefault(hit.media_id, hit)
    return list(best.values())


def search_media(
    db: Database,
    vectors: VectorIndex,
    *,
    owner: str,
    space: Space,
    vector: Sequence[float],
    limit: int,
) -> list[Hit]:
    """Return up to `limit` distinct live media of this owner nearest to `vector`."""
    check_vector(vector, vectors.dims[space], "vector", f"vector (space {space})")
    fetch = limit * SEARCH_FETCH_FACTOR
    while True:
        hits = vectors.search(space, vector, owner, fetch)
        candidates = _distinct(hits)
        alive = live_ids(db, owner, [hit.media_id for hit in candidates])
        results = [hit for hit in candidates if hit.media_id in alive]
        if len(results) >= limit or len(hits) < fetch or fetch >= SEARCH_FETCH_MAX:
            return results[:limit]
        fetch = min(fetch * 4, SEARCH_FETCH_MAX)
