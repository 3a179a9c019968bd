"""Demo data: media with random vectors, written in batches straight into both stores."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
from sqlalchemy import insert, update

from ..db import Database
from ..models import Media, MediaState, utcnow
from ..vectors.base import SPACES, Space, VectorIndex, VectorPoint, point_id
from .errors import STORE_ERRORS
from .media import abandon_creations, new_media_id
from .points import MediaPoints

SEED_BATCH = 1000


def seed_media(
    db: Database,
    vectors: VectorIndex,
    *,
    owner: str,
    count: int,
    hd: int = 1,
    ld: int = 1,
    seed: int | None = None,
) -> Iterator[list[str]]:
    """Write `count` live media and yield their ids a batch at a time."""
    rng = np.random.default_rng(seed)
    per_media: dict[Space, int] = {"hd": hd, "ld": ld}
    for start in range(0, count, SEED_BATCH):
        ids = [new_media_id() for _ in range(min(SEED_BATCH, count - start))]
        now = utcnow()
        # The same protocol as a single creation, a batch at a time: rows `pending`, then
        # the points, then `live`. A crash in between leaves pending rows the reconciler removes.
        with db.unit_of_work() as uow:
            uow.session.execute(
                insert(Media),
                [
                    {
                        "id": media_id,
                        "owner": owner,
                        "state": MediaState.PENDING,
                        "title": f"demo {start + i}",
                        "metadata_": None,
                        "hd_count": hd,
                        "ld_count": ld,
                        "created_at": now,
                    }
                    for i, media_id in enumerate(ids)
                ],
            )
            uow.commit()
        items = [MediaPoints(media_id, hd, ld) for media_id in ids]
        try:
            for space in SPACES:
                k = per_media[space]
                if not k:
                    continue
                matrix = rng.random((len(ids) * k, vectors.dims[space]), dtype=np.float32)
                rows = matrix.tolist()
                points = [
                    VectorPoint(point_id(media_id, space, j), rows[i * k + j], media_id, owner)
                    for i, media_id in enumerate(ids)
                    for j in range(k)
                ]
                vectors.upsert(space, points)
            vectors.flush()
            with db.unit_of_work() as uow:
                marked = set(
                    uow.session.scalars(
                        update(Media)
                        .where(Media.id.in_(ids), Media.state == MediaState.PENDING)
                        .values(state=MediaState.LIVE)
                        .returning(Media.id)
                        .execution_options(synchronize_session=False)
                    )
                )
                uow.commit()
        except STORE_ERRORS:
            abandon_creations(db, vectors, items)
            raise
        # A row the reconciler removed meanwhile (a batch slower than its grace period) is
        # not live: its points go as a failed creation's do, and its id is not printed.
        if len(marked) < len(ids):
            abandon_creations(db, vectors, [item for item in items if item.media_id not in marked])
        yield [media_id for media_id in ids if media_id in marked]
