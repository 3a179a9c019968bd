"""Fault injection around a real vector store: the store is real, only failures are made up."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Sequence
from typing import Any

from wickson_batch.services.errors import VectorStoreError
from wickson_batch.vectors.base import Space, VectorIndex


class FlakyVectors:
    """Delegates to a real VectorIndex; fails chosen operations while `failing` is set."""

    def __init__(
        self,
        inner: VectorIndex,
        operations: Sequence[str] = ("delete",),
        spaces: Sequence[Space] = ("hd", "ld"),
    ) -> None:
        self.inner = inner
        self.operations = set(operations)
        self.spaces = set(spaces)
        self.failing = True
        self.calls: list[tuple[str, Space, int]] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def _maybe_fail(self, operation: str, space: Space) -> None:
        if self.failing and operation in self.operations and space in self.spaces:
            raise VectorStoreError(f"injected {operation} failure on {space}")

    def delete(self, space: Space, point_ids: Sequence[uuid.UUID]) -> None:
        self.calls.append(("delete", space, len(point_ids)))
        self._maybe_fail("delete", space)
        self.inner.delete(space, point_ids)

    def upsert(self, space: Space, points: Sequence[Any]) -> None:
        self.calls.append(("upsert", space, len(points)))
        self._maybe_fail("upsert", space)
        self.inner.upsert(space, points)


class BlockingVectors:
    """Delegates to a real VectorIndex; `delete` waits until released, to hold a request open."""

    def __init__(self, inner: VectorIndex) -> None:
        self.inner = inner
        self.entered = threading.Event()
        self.release = threading.Event()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def delete(self, space: Space, point_ids: Sequence[uuid.UUID]) -> None:
        self.entered.set()
        if not self.release.wait(timeout=30):
            raise VectorStoreError("test never released the blocked delete")
        self.inner.delete(space, point_ids)
