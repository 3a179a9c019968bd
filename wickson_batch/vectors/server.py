"""A Qdrant server or cluster through qdrant-client (QDRANT_URL)."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any, TypeVar

import structlog
from qdrant_client import QdrantClient, models

from .base import (
    COLLECTIONS,
    SPACES,
    DeletedPoints,
    Hit,
    Space,
    StoredPoint,
    VectorPoint,
    VectorStoreError,
)

T = TypeVar("T")

# qdrant-client's in-process local mode, which makes the same client calls as against a
# server; the test suite uses it as the stand-in for a server.
MEMORY_URL = ":memory:"
# The same local mode kept in a folder (`file:///abs/dir`), so that a seeded store can be
# served by another process; the benchmark compares it with the embedded engine.
LOCAL_PATH_PREFIX = "file://"
DEFAULT_GRPC_PORT = 6334  # Qdrant's; QDRANT_URL names the REST port

log = structlog.get_logger("wickson_batch")


@dataclass(frozen=True, slots=True)
class ClusterOptions:
    """How the adapter talks to a Qdrant server or cluster (the QDRANT_* settings).

    The three factors are used only when the adapter creates a collection (None: the
    server's default); `ordering` goes with every upsert and delete.
    """

    shard_number: int | None = None
    replication_factor: int | None = None
    write_consistency_factor: int | None = None
    ordering: models.WriteOrdering = models.WriteOrdering.WEAK
    prefer_grpc: bool = False
    grpc_port: int = DEFAULT_GRPC_PORT
    timeout_seconds: int = 10


# The collection parameters ClusterOptions sets, by the setting that names them.
_CLUSTER_PARAMS = {
    "shard_number": "QDRANT_SHARD_NUMBER",
    "replication_factor": "QDRANT_REPLICATION_FACTOR",
    "write_consistency_factor": "QDRANT_WRITE_CONSISTENCY_FACTOR",
}


def connect(
    url: str, api_key: str | None = None, options: ClusterOptions | None = None
) -> QdrantClient:
    """Return a client for QDRANT_URL (`:memory:` or `file:///dir` select the local mode)."""
    if url == MEMORY_URL:
        return QdrantClient(location=MEMORY_URL)
    if url.startswith(LOCAL_PATH_PREFIX):
        return QdrantClient(path=url[len(LOCAL_PATH_PREFIX) :])
    options = options or ClusterOptions()
    return QdrantClient(
        url=url,
        api_key=api_key,
        prefer_grpc=options.prefer_grpc,
        grpc_port=options.grpc_port,
        # qdrant-client takes whole seconds (it rounds a fraction up itself); the same
        # limit holds for REST and gRPC calls.
        timeout=options.timeout_seconds,
    )


def _describe(error: Exception) -> str:
    """Return an error's message; a gRPC error's code and details rather than its repr."""
    code, details = getattr(error, "code", None), getattr(error, "details", None)
    if callable(code) and callable(details):
        return f"gRPC {getattr(code(), 'name', code())}: {details()}"
    return str(error)


def _call(action: str, fn: Callable[[], T]) -> T:
    try:
        return fn()
    except Exception as error:  # transport, timeout and server errors alike
        raise VectorStoreError(f"Qdrant failed to {action}: {_describe(error)}") from error


def _applied(action: str, result: models.UpdateResult) -> None:
    """Refuse an update the server took but did not confirm applied (it is retried)."""
    if result.status != models.UpdateStatus.COMPLETED:
        raise VectorStoreError(
            f"Qdrant did not confirm the {action} was applied (status {result.status})"
        )


def _owner_filter(owner: str) -> models.Filter:
    return models.Filter(
        must=[models.FieldCondition(key="owner", match=models.MatchValue(value=owner))]
    )


class ServerIndex:
    """Collections `media_hd` and `media_ld` on a Qdrant server."""

    def __init__(
        self,
        client: QdrantClient,
        dims: dict[Space, int],
        options: ClusterOptions | None = None,
    ) -> None:
        self.client = client
        self.dims = dims
        self.options = options or ClusterOptions()
        self._warned: set[str] = set()

    def ensure(self) -> None:
        """Create missing collections with keyword indexes on `media_id` and `owner`."""
        for space in SPACES:
            name = COLLECTIONS[space]
            if _call("list collections", partial(self.client.collection_exists, name)):
                self._check_existing(space)
                continue
            params = models.VectorParams(size=self.dims[space], distance=models.Distance.COSINE)
            create = partial(
                self.client.create_collection,
                name,
                vectors_config=params,
                shard_number=self.options.shard_number,
                replication_factor=self.options.replication_factor,
                write_consistency_factor=self.options.write_consistency_factor,
            )
            try:
                _call("create a collection", create)
            except VectorStoreError:
                # Several workers start at once: another one may have just created it.
                if not _call("list collections", partial(self.client.collection_exists, name)):
                    raise
                self._check_existing(space)
            tenant = models.KeywordIndexParams(type=models.KeywordIndexType.KEYWORD, is_tenant=True)
            _call("index owner", partial(self.client.create_payload_index, name, "owner", tenant))
            keyword = models.PayloadSchemaType.KEYWORD
            _call(
                "index media_id",
                partial(self.client.create_payload_index, name, "media_id", keyword),
            )

    def _check_existing(self, space: Space) -> None:
        """Refuse a collection of other dimensions; warn once of other cluster parameters."""
        name = COLLECTIONS[space]
        params = _call("read a collection", lambda: self.client.get_collection(name)).config.params
        size = getattr(params.vectors, "size", None)
        if size is not None and size != self.dims[space]:
            raise VectorStoreError(
                f"collection {name} holds {size}-dimensional vectors but "
                f"{space.upper()}_DIM={self.dims[space]}"
            )
        differences = {
            setting: {"collection": getattr(params, field), "setting": wanted}
            for field, setting in _CLUSTER_PARAMS.items()
            if (wanted := getattr(self.options, field)) is not None
            and getattr(params, field) is not None
            and getattr(params, field) != wanted
        }
        if differences and name not in self._warned:
            # A production collection is never changed behind the operator's back.
            self._warned.add(name)
            log.warning(
                "vectors.collection_config_differs",
                collection=name,
                differences=differences,
                action=(
                    "left as it is: the settings apply only when a collection is created; "
                    "the shard count changes only by re-creating the collection, the two "
                    f"factors by PATCH /collections/{name}"
                ),
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
        upsert = partial(
            self.client.upsert,
            COLLECTIONS[space],
            structs,
            wait=True,
            ordering=self.options.ordering,
        )
        _applied("upsert", _call("upsert", upsert))

    def delete(self, space: Space, point_ids: Sequence[uuid.UUID]) -> None:
        """Delete points by id in one call and wait until applied."""
        if not point_ids:
            return
        delete = partial(
            self.client.delete,
            COLLECTIONS[space],
            points_selector=models.PointIdsList(points=[str(i) for i in point_ids]),
            wait=True,
            ordering=self.options.ordering,
        )
        _applied("delete", _call("delete", delete))

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

    def deleted_points(self, space: Space) -> DeletedPoints | None:
        """None: a Qdrant server's own optimizers vacuum its segments (deleted_threshold)."""
        return None

    def optimize(self, space: Space) -> bool:
        """Nothing to do: a Qdrant server vacuums its segments itself, in the background."""
        return False

    def disk_bytes(self) -> int | None:
        """None: the store is on the Qdrant server's disks, not this machine's."""
        return None

    def close(self) -> None:
        """Close the client."""
        self.client.close()
