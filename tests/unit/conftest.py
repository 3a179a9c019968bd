"""Fixtures of the unit tests: a real SQLite database and a fake vector store."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.unit.fakes import FakeVectors
from wickson_batch.db import Database


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    database = Database(f"sqlite:///{tmp_path / 'unit.db'}")
    database.upgrade_schema()
    yield database
    database.dispose()


@pytest.fixture
def vectors() -> FakeVectors:
    return FakeVectors()
