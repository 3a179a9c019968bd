"""The VectorIndex port: what the services need from a vector store, and its errors."""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

Space = Literal["hd", "ld"]
SPACES: tuple[Space, ...] = ("hd", "ld")
COLLECTIONS: dict[Space, str] = {"hd": "media_hd", "ld": "media_ld"}

# Fixed namespace: a media's point ids are derivable without asking the store.
POINT_NAMESPACE = uuid.UUID("6f1d9f3e-8d1a-5b0e-9c55-2a7b1f0c4e11")


def point_id(media_id: str, space: Space, index: int) -> uuid.UUID:
    """Return the deterministic id of one point of a media."""
    return uuid.uuid5(POINT_NAMESPACE, f"{media_id}/{space}/{index}")


def point_ids_for(media_id: str, space: Space, count: int) -> list[uuid.UUID]:
    """Return the ids of all `count` points a media has in one space."""
    return [point_id(media_id, space, index) for index in range(count)]


class VectorStoreError(Exception):
    """The vector store failed an operation."""


class VectorStoreLocked(VectorStoreError):
    """The embedded vector store is open in another process."""


@dataclass(frozen=True, slots=True)
class VectorPoint:
    """One vector with the payload every point carries."""

    id: uuid.UUID
    vector: Sequence[float]
    media_id: str
    owner: str


@dataclass(frozen=True, slots=True)
class Hit:
    """One search result: the media a point belongs to, and its score."""

    media_id: str
    score: float


@dataclass(frozen=True, slots=True)
class DeletedPoints:
    """A space's points deleted but still in its files, as this service counted them."""

    deleted: int
    live: int
    # Unix time of the oldest deletion not yet vacuumed; None when there is none.
    oldest: float | None

    @property
    def share(self) -> float:
        """Return the deleted points' share of all the points in the files (0..1)."""
        total = self.deleted + self.live
        return self.deleted / total if total else 0.0


@dataclass(frozen=True, slots=True)
class StoredPoint:
    """A point as a scan sees it."""

    id: uuid.UUID
    media_id: str


class VectorIndex(Protocol):
    """Two collections of points, `hd` and `ld`, addressed by point id."""

    dims: dict[Space, int]

    def ensure(self) -> None:
        """Create the collections (and payload indexes) that do not exist yet."""
        ...

    def upsert(self, space: Space, points: Sequence[VectorPoint]) -> None:
        """Write points, replacing any with the same id; durable in the store's log."""
        ...

    def delete(self, space: Space, point_ids: Sequence[uuid.UUID]) -> None:
        """Delete points by id in one call; ids that are absent are ignored."""
        ...

    def count(self, space: Space, media_id: str | None = None) -> int:
        """Count the points of a space, or of one media in it."""
        ...

    def search(self, space: Space, vector: Sequence[float], owner: str, limit: int) -> list[Hit]:
        """Return the nearest points of one owner, best first."""
        ...

    def scan(self, space: Space, batch_size: int = 1000) -> Iterator[list[StoredPoint]]:
        """Yield every point of a space, a page at a time."""
        ...

    def ping(self) -> None:
        """Raise VectorStoreError unless the store answers."""
        ...

    def deleted_points(self, space: Space) -> DeletedPoints | None:
        """Return what deleted points a space still holds; None if the store vacuums itself."""
        ...

    def optimize(self, space: Space) -> bool:
        """Vacuum one space's deleted points out of its files now, blocking until done.

        Return whether anything was rewritten (False as well for a store that vacuums itself).
        """
        ...

    def disk_bytes(self) -> int | None:
        """Return the bytes the store occupies on this machine's disk; None if it is remote."""
        ...

    def flush(self) -> None:
        """Make written changes durable on disk where the store buffers them."""
        ...

    def close(self) -> None:
        """Release the store."""
        ...
