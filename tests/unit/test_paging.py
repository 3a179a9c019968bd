"""Opaque cursors: a position read back exactly, and only by the listing that made it."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from wickson_batch.services.errors import InvalidCursor
from wickson_batch.services.paging import Position, decode_cursor, encode_cursor

AT = Position(datetime(2026, 3, 9, 12, 34, 56, 789012, tzinfo=UTC), "vec-0a")


def test_a_cursor_reads_back_to_its_position_to_the_microsecond() -> None:
    cursor = encode_cursor("alice/all", AT)

    assert decode_cursor(cursor, "alice/all") == AT
    assert cursor.isascii() and "=" not in cursor and "/" not in cursor and "+" not in cursor


def test_a_cursor_of_another_scope_is_refused_naming_the_field() -> None:
    cursor = encode_cursor("alice/all", AT)

    with pytest.raises(InvalidCursor) as caught:
        decode_cursor(cursor, "bob/all", field="page")

    assert caught.value.field == "page"
    assert str(caught.value).startswith("Invalid page: it belongs to another listing")


@pytest.mark.parametrize("cursor", ["", "x", "%%%", "e30", "bnVsbA", "W10", "é"])
def test_anything_else_is_refused(cursor: str) -> None:
    with pytest.raises(InvalidCursor) as caught:
        decode_cursor(cursor, "alice/all")

    assert str(caught.value) == (
        "Invalid cursor: it is not a cursor this service made; start again without one"
    )
