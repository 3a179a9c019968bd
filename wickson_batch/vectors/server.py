"""A Qdrant server or cluster through qdrant-client (QDRANT_URL)."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator, Sequence
from functools import partial
from typing import Any, TypeVar

from qdrant_client import QdrantClient, models

from .base import COLLECTIONS, SPACES, Hit, Space, StoredPoint, VectorPoint, VectorStoreError

T = TypeVar("T")

# qdrant-client's in-process local mode, which makes the same client calls as against a
# server; the test suite uses it as the stand-in for a server.
MEMORY_URL = ":memory:"
# The same local mode kept in a folder (`file:///abs/dir`), so that a seeded store can be
# served by another process; the benchmark compares it with the embedded engine.
LOCAL_PATH_PREFIX = "file://"


def connect(url: str, api_key: str | None = None, timeout: int = 10) -> QdrantClient:
    """Return a client for QDRANT_URL (`:memory:` or `file:///dir` select the local mode)."""
    if url == MEMORY_URL:
        return QdrantClient(location=MEMORY_URL)
    if url.startswith(LOCAL_PATH_PREFIX):
        return QdrantClient(path=url[len(LOCAL_PATH_PREFIX) :])
    return QdrantClient(url=url, api_key=api_key, timeout=timeout)


def _call(action: str, fn: Callable[[], T]) -> T:
    try:
        return fn()
    except Exception as error:  # transport, timeout and server errors alike
        raise VectorStoreError(f"Qdrant failed to {action}: {error}") from error


def _owner_filter(owner: str) -> models.Filter:
    return models.Filter(
        must=[models.FieldCondition(key="owner", match=models.MatchValue(value=owner))]
    )


class ServerIndex:
    """Collections `media_hd` and `media_ld` on a Qdrant server."""

    def __init__(self, client: QdrantClient, dims: dict[Space, int]) -> None:
        self.client = client
        self.dims = dims

    def ensure(self) -> None:
        """Create missing collections with keyword indexes on `media_id` and `owner`."""
        for space in SPACES:
            name = COLLECTIONS[space]
            if _call("list collections", partial(self.client.collection_exists, name)):
                self._check_dims(space)
                continue
            params = models.VectorParams(size=self.dims[space], distance=models.Distance.COSINE)
            try:
                _call(
                    "create a collection",
                    partial(self.client.create_collection, name, vectors_config=params),
                )
            except VectorStoreError:
                # Several workers start at once: another one may have just created it.
                if not _call("list collections", partial(self.client.collection_exists, name)):
                    raise
                self._check_dims(space)
            tenant = models.KeywordIndexParams(type=models.KeywordIndexType.KEYWORD, is_tenant=True)
            _call("index owner", partial(self.client.create_payload_index, name, "owner", tenant))
            keyword = models.PayloadSchemaType.KEYWORD
            _call(
                "index media_id",
                partial(self.client.create_payload_index, name, "media_id", keyword),
            )

    def _check_dims(self, space: Space) -> None:
        info = _call("read a collection", lambda: self.client.get_collection(COLLECTIONS[space]))
        vectors = info.config.params.vectors
        size = getattr(vectors, "size", None)
        if size is not None and size != self.dims[space]:
            raise VectorStoreError(
                f"collection {COLLECTIONS[space]} holds {size}-dimensional vectors but "
                f"{space.upper()}_DIM={self.dims[space]}"
            )

    def upsert(self, space: Space, points: Sequence[VectorPoint]) -> None:
        """Write points and wait until they are applied."""
        structs = [
            models.PointStruct(
                id=str(p.id),
                vector=list(p.vector),
                payload={"media_id": p.media_id, "owner": p.owner},
            )
            for p in points
        ]
        _call("upsert", lambda: self.client.upsert(COLLECTIONS[space], structs, wait=True))

    def delete(self, space: Space, point_ids: Sequence[uuid.UUID]) -> None:
        """Delete points by id in one call and wait until applied."""
        if not point_ids:
            return
        selector = models.PointIdsList(points=[str(i) for i in point_ids])
        _call(
            "delete",
            lambda: self.client.delete(COLLECTIONS[space], points_selector=selector, wait=True),
        )

    def count(self, space: Space, media_id: str | None = None) -> int:
        """Count points exactly."""
        condition = None
        if media_id is not None:
            condition = models.Filter(
                must=[
                    models.FieldCondition(key="media_id", match=models.MatchValue(value=media_id))
                ]
            )
        result = _call(
            "count",
            lambda: self.client.count(COLLECTIONS[space], count_filter=condition, exact=True),
        )
        return int(result.count)

    def search(self, space: Space, vector: Sequence[float], owner: str, limit: int) -> list[Hit]:
        """Nearest points of one owner."""
        result = _call(
            "search",
            lambda: self.client.query_points(
                COLLECTIONS[space],
                query=list(vector),
                query_filter=_owner_filter(owner),
                limit=limit,
                with_payload=["media_id"],
            ),
        )
        return [
            Hit(media_id=str((p.payload or {})["media_id"]), score=p.score) for p in result.points
        ]

    def scan(self, space: Space, batch_size: int = 1000) -> Iterator[list[StoredPoint]]:
        """Page through every point."""
        offset: Any = None
        while True:
            page = partial(
                self.client.scroll,
                COLLECTIONS[space],
                limit=batch_size,
                offset=offset,
                with_payload=["media_id"],
            )
            records, offset = _call("scan", page)
            if records:
                yield [
                    StoredPoint(
                        id=uuid.UUID(str(r.id)), media_id=str((r.payload or {}).get("media_id"))
                    )
                    for r in records
                ]
            if offset is None:
                return

    def ping(self) -> None:
        """Check the server answers."""
        _call("answer", self.client.get_collections)

    def flush(self) -> None:
        """Nothing to do: every write waits for the server to apply it."""

    def close(self) -> None:
        """Close the client."""
        self.client.close()
