"""The embedded default: one qdrant-edge shard per space under DATA_DIR/vectors/."""

from __future__ import annotations

import json
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from functools import partial
from typing import Any, TypeVar

from qdrant_edge import (
    CountRequest,
    Distance,
    EdgeConfig,
    EdgeOptimizersConfig,
    EdgeShard,
    EdgeVectorParams,
    FieldCondition,
    Filter,
    HnswIndexConfig,
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
    DeletedPoints,
    Hit,
    Space,
    StoredPoint,
    VectorPoint,
    VectorStoreError,
    VectorStoreLocked,
)

T = TypeVar("T")

# What the service counts of each space's deletions since its last vacuum, kept beside the
# shards: the engine itself tells only how many points are live.
VACUUM_STATE = "vacuum-state.json"

# When to vacuum is the service's decision (services/vacuum.py: a space's deleted share, or
# the age of its oldest deletion); once asked, the engine vacuums every segment holding any
# deleted point, however few, so that afterwards no deleted vector is left in the files.
_ENGINE_VACUUM = EdgeOptimizersConfig(
    deleted_threshold=1e-9,
    vacuum_min_vector_number=0,
    # Every segment an optimization writes is made immutable and compact (`matrix.dat`, its
    # exact size) rather than appendable (32 MiB chunks): a vacuumed space shrinks to what
    # it holds even when that is small.
    indexing_threshold=1,
)
# No HNSW graph (m=0): a search scans the owner's points as it did in the appendable
# segments, and an optimization never spends seconds building a graph (20k points of 256
# dimensions: 10 s with the default m=16, while holding the GIL).
_NO_GRAPH = HnswIndexConfig(m=0, ef_construct=100, full_scan_threshold=10_000)


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
        self._lock = threading.Lock()
        self._save_lock = threading.Lock()
        self._saved: dict[str, Any] | None = None
        self._deleted: dict[Space, int] = {space: 0 for space in SPACES}
        self._oldest: dict[Space, float | None] = {space: None for space in SPACES}

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
        return EdgeConfig(vectors=params, optimizers=_ENGINE_VACUUM, hnsw_config=_NO_GRAPH)

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
                    existed = os.path.isdir(self._path(space)) and bool(
                        os.listdir(self._path(space))
                    )
                    self._shards[space] = self._open(space)
                    self._load_vacuum_state(space, existed)
        except VectorStoreError:
            self.close()
            raise

    def _state_path(self) -> str:
        return os.path.join(self.root, VACUUM_STATE)

    def _load_vacuum_state(self, space: Space, existed: bool) -> None:
        try:
            with open(self._state_path()) as file:
                state = json.load(file)[space]
            deleted, oldest = int(state["deleted"]), state["oldest"]
        except (OSError, ValueError, KeyError, TypeError):
            # A shard made before the count was kept (or a lost count): what it holds
            # deleted is unknown, so it counts as due at once (the epoch as its oldest).
            deleted, oldest = 0, (0.0 if existed else None)
        with self._lock:
            self._deleted[space] = deleted
            self._oldest[space] = None if oldest is None else float(oldest)

    def _save_vacuum_state(self) -> None:
        """Write the counts if they changed since the last write (a flush follows each write)."""
        with self._save_lock:
            with self._lock:
                state: dict[str, Any] = {
                    s: {"deleted": self._deleted[s], "oldest": self._oldest[s]} for s in SPACES
                }
            if state == self._saved:
                return
            path = self._state_path()
            temporary = f"{path}.tmp"
            with open(temporary, "w") as file:
                json.dump(state, file)
            os.replace(temporary, path)
            self._saved = state

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
        # Counted as asked: an id that was absent adds one too much, which only brings the
        # next vacuum forward (a vacuum resets the count to what it left behind: nothing).
        with self._lock:
            self._deleted[space] += len(point_ids)
            if self._oldest[space] is None:
                self._oldest[space] = time.time()

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
        """Flush both shards' pending changes to their segments, and the deletion counts."""
        for shard in self._shards.values():
            _call("flush", shard.flush)
        if self._shards:
            self._save_vacuum_state()

    def deleted_points(self, space: Space) -> DeletedPoints:
        """The points deleted since the space's last vacuum, its live points, the oldest."""
        live = int(_call("answer", self._shard(space).info).points_count)
        with self._lock:
            return DeletedPoints(self._deleted[space], live, self._oldest[space])

    def optimize(self, space: Space) -> bool:
        """Vacuum the space now: rewrite every segment holding a deleted point, then flush.

        qdrant-edge 0.9.0 holds the GIL for the whole call (docs/operations.md has the
        figures): every other thread of the process waits until it returns.
        """
        shard = self._shard(space)
        with self._lock:
            before = self._deleted[space]
        started = time.time()
        rewritten = bool(_call("optimize", shard.optimize))
        _call("flush", shard.flush)  # the replaced segments' files go at the flush
        with self._lock:
            # Deletions made meanwhile may or may not have been vacuumed: they stay counted.
            self._deleted[space] = max(0, self._deleted[space] - before)
            self._oldest[space] = started if self._deleted[space] else None
        self._save_vacuum_state()
        return rewritten

    def disk_bytes(self) -> int:
        """The bytes allocated on disk under DATA_DIR/vectors (segment files are sparse)."""
        total = 0
        for folder, _, names in os.walk(self.root):
            for name in names:
                try:
                    total += os.stat(os.path.join(folder, name)).st_blocks * 512
                except OSError:  # a segment file removed by a vacuum meanwhile
                    continue
        return total

    def close(self) -> None:
        """Flush and close both shards, releasing their locks."""
        shards, self._shards = self._shards, {}
        for shard in shards.values():
            _call("flush", shard.flush)
        if shards:
            self._save_vacuum_state()
        for shard in shards.values():
            _call("close", shard.close)
