"""Fault injection around a real vector store: the store is real, only failures are made up."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Engine

from wickson_batch.vectors.base import Space, VectorIndex, VectorStoreError


class FlakyVectors:
    """Delegates to a real VectorIndex; fails chosen operations while `failing` is set."""

    def __init__(
        self,
        inner: VectorIndex,
        operations: Sequence[str] = ("delete",),
        spaces: Sequence[Space] = ("hd", "ld"),
        error: Callable[[str], Exception] = VectorStoreError,
        delay: float = 0.0,
    ) -> None:
        self.inner = inner
        self.operations = set(operations)
        self.spaces = set(spaces)
        self.error = error
        self.delay = delay  # seconds a failing call takes before it fails, as a timeout does
        self.failing = True
        self.calls: list[tuple[str, Space, int]] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def _maybe_fail(self, operation: str, space: Space) -> None:
        if self.failing and operation in self.operations and space in self.spaces:
            time.sleep(self.delay)
            raise self.error(f"injected {operation} failure on {space}")

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


def timed_out(message: str) -> Exception:
    """Return the error a client raises when the store does not answer in time."""
    return TimeoutError(f"timed out: {message}")


class DatabaseOutage:
    """Makes the real database fail, as a dropped connection does, at a chosen point.

    `at="statement"` fails the statement that deletes media rows; `at="commit"` lets it run
    (rows are deleted inside the transaction) and fails the commit after it. Either way the
    driver's own OperationalError is raised, so SQLAlchemy wraps it as it would a real one.
    """

    def __init__(
        self, engine: Engine, at: str, statement_prefix: str = "DELETE FROM media"
    ) -> None:
        assert at in ("statement", "commit")
        self.engine = engine
        self.at = at
        self.prefix = statement_prefix
        self.failures = 0
        self._touched: set[int] = set()  # DBAPI connections whose transaction ran the statement

    def _fail(self) -> None:
        self.failures += 1
        raise self.engine.dialect.loaded_dbapi.OperationalError(
            "injected: server closed the connection"
        )

    @contextmanager
    def active(self) -> Iterator[DatabaseOutage]:
        """Fail while inside the block; the database works again after it."""
        dialect = self.engine.dialect
        do_execute, do_commit = dialect.do_execute, dialect.do_commit

        def execute(cursor: Any, statement: str, parameters: Any, context: Any = None) -> None:
            if statement.lstrip().startswith(self.prefix):
                if self.at == "statement":
                    self._fail()
                self._touched.add(id(cursor.connection))
            do_execute(cursor, statement, parameters, context)

        def commit(dbapi_connection: Any) -> None:
            # SQLAlchemy hands the pool's proxy here and the driver's connection to cursors.
            raw = getattr(dbapi_connection, "dbapi_connection", dbapi_connection)
            if id(raw) in self._touched:
                self._touched.discard(id(raw))
                self._fail()
            do_commit(dbapi_connection)

        dialect.do_execute = execute  # type: ignore[method-assign]
        dialect.do_commit = commit  # type: ignore[method-assign]
        try:
            yield self
        finally:
            dialect.do_execute, dialect.do_commit = do_execute, do_commit  # type: ignore[method-assign]
            self._touched.clear()
