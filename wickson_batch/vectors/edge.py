"""The embedded default: one qdrant-edge shard per space under DATA_DIR/vectors/."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator, Sequence
from functools import partial
from typing import Any, TypeVar

from qdrant_edge import (
    CountRequest,
    Distance,
    EdgeConfig,
    EdgeShard,
    EdgeVectorParams,
    FieldCondition,
    Filter,
    MatchValue,
    Memory,
    PayloadSchemaType,
    Point,
    Query,
    ScrollRequest,
    SearchRequest,
    UpdateOperation,
)

from .base import (
    COLLECTIONS,
    SPACES,
    Hit,
    Space,
    StoredPoint,
    VectorPoint,
    VectorStoreError,
    VectorStoreLocked,
)

T = TypeVar("T")


def _call(action: str, fn: Callable[[], T]) -> T:
    try:
        return fn()
    except VectorStoreError:
        raise
    except Exception as error:  # the engine raises bare Exceptions
        raise VectorStoreError(f"embedded vector store failed to {action}: {error}") from error


def _as_uuid(value: Any) -> uuid.UUID:
    return value if isinstance(value, uuid.UUID) else uuid.UUID(str(value))


class EdgeIndex:
    """qdrant-edge shards `media_hd` and `media_ld`; one process may open them at a time."""

    def __init__(self, data_dir: str, dims: dict[Space, int]) -> None:
        self.root = os.path.join(os.path.abspath(data_dir), "vectors")
        self.dims = dims
        self._shards: dict[Space, Any] = {}

    def _path(self, space: Space) -> str:
        return os.path.join(self.root, COLLECTIONS[space])

    def _config(self, space: Space) -> Any:
        # Vectors stay in their files (mmap, read on demand) rather than being copied into
        # RAM when a shard opens: deletion never reads them, and at a million media of 1024
        # dimensions the copy was 4 GiB of memory and seconds of start-up. Applies to
        # segments made from now on; a shard's existing segments keep how they were made.
        params = EdgeVectorParams(
            size=self.dims[space], distance=Distance.Cosine, memory=Memory.Cold
        )
        return EdgeConfig(vectors=params)

    def _open(self, space: Space) -> Any:
        path = self._path(space)
        config = self._config(space)
        exists = os.path.isdir(path) and bool(os.listdir(path))
        try:
            if exists:
                return EdgeShard.load(path, config)
            shard = EdgeShard.create(path, config)
        except Exception as error:
            text = str(error)
            if "WouldBlock" in text:
                raise VectorStoreLocked(
                    f"the embedded vector store at {self.root} is open in another process: "
                    "stop the server (or the other command) first"
                ) from error
            if "incompatible" in text:
                raise VectorStoreError(
                    f"the vector store at {path} was made with other dimensions than "
                    f"{space.upper()}_DIM={self.dims[space]}: {text}"
                ) from error
            raise VectorStoreError(f"cannot open the vector store at {path}: {text}") from error
        for field in ("media_id", "owner"):
            shard.update(UpdateOperation.create_field_index(field, PayloadSchemaType.Keyword))
        return shard

    def _shard(self, space: Space) -> Any:
        shard = self._shards.get(space)
        if shard is None:
            raise VectorStoreError("the embedded vector store is closed")
        return shard

    def ensure(self) -> None:
        """Open (creating if needed) both shards; on failure, release any it opened."""
        try:
            for space in SPACES:
                if space not in self._shards:
                    self._shards[space] = self._open(space)
        except VectorStoreError:
            self.close()
            raise

    def upsert(self, space: Space, points: Sequence[VectorPoint]) -> None:
        """Write points in one update."""
        operation = UpdateOperation.upsert_points(
            [
                Point(p.id, list(p.vector), {"media_id": p.media_id, "owner": p.owner})
                for p in points
            ]
        )
        _call("upsert", lambda: self._shard(space).update(operation))

    def delete(self, space: Space, point_ids: Sequence[uuid.UUID]) -> None:
        """Delete points by id in one update."""
        if not point_ids:
            return
        operation = UpdateOperation.delete_points(list(point_ids))
        _call("delete", lambda: self._shard(space).update(operation))

    def count(self, space: Space, media_id: str | None = None) -> int:
        """Count points exactly."""
        condition = None
        if media_id is not None:
            condition = Filter(must=[FieldCondition(key="media_id", match=MatchValue(media_id))])
        request = CountRequest(exact=True, filter=condition)
        return int(_call("count", lambda: self._shard(space).count(request)))

    def search(self, space: Space, vector: Sequence[float], owner: str, limit: int) -> list[Hit]:
        """Nearest points of one owner."""
        request = SearchRequest(
            query=Query.Nearest(list(vector)),
            limit=limit,
            filter=Filter(must=[FieldCondition(key="owner", match=MatchValue(owner))]),
            with_payload=["media_id"],
        )
        found = _call("search", lambda: self._shard(space).search(request))
        return [Hit(media_id=str(p.payload["media_id"]), score=float(p.score)) for p in found]

    def scan(self, space: Space, batch_size: int = 1000) -> Iterator[list[StoredPoint]]:
        """Page through every point."""
        offset: Any = None
        while True:
            request = ScrollRequest(offset=offset, limit=batch_size, with_payload=["media_id"])
            records, offset = _call("scan", partial(self._shard(space).scroll, request))
            if records:
                yield [
                    StoredPoint(id=_as_uuid(r.id), media_id=str((r.payload or {}).get("media_id")))
                    for r in records
                ]
            if offset is None:
                return

    def ping(self) -> None:
        """Check both shards answer."""
        for space in SPACES:
            _call("answer", self._shard(space).info)

    def flush(self) -> None:
        """Flush both shards' pending changes to their segments."""
        for shard in self._shards.values():
            _call("flush", shard.flush)

    def close(self) -> None:
        """Flush and close both shards, releasing their locks."""
        shards, self._shards = self._shards, {}
        for shard in shards.values():
            _call("flush", shard.flush)
            _call("close", shard.close)
