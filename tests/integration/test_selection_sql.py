"""Filters and selections as SQL, on SQLite and (in the server pass) PostgreSQL.

Rows are written straight into `media`, so every JSON kind and every edge of time can be
set exactly; the queries are the ones the listing and the jobs run.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Column, MetaData, String, Table, func, insert, select

from tests.helpers import settings_for
from wickson_batch.db import Database
from wickson_batch.models import Media, MediaState
from wickson_batch.services.selection import (
    MediaFilter,
    Selection,
    filter_clause,
    parse_selection,
    selected_ids,
)

T0 = datetime(2025, 5, 1, 12, 0, tzinfo=UTC)

# name -> (owner, metadata, seconds after T0, parent, state)
ROWS: dict[str, tuple[str, Any, float, str | None, str]] = {
    "str1": ("alice", {"n": "1", "campaign": "summer"}, 0, None, MediaState.LIVE),
    "int1": ("alice", {"n": 1, "campaign": "summer"}, 1, None, MediaState.LIVE),
    "float1": ("alice", {"n": 1.0}, 2, None, MediaState.LIVE),
    "true": ("alice", {"n": True, "campaign": "winter"}, 3, "vec-int1", MediaState.LIVE),
    "false": ("alice", {"n": False}, 4, "vec-int1", MediaState.LIVE),
    "zero": ("alice", {"n": 0, "s": "true"}, 5, "vec-true", MediaState.LIVE),
    "big": ("alice", {"n": 9007199254740993}, 6, None, MediaState.LIVE),
    "nested": ("alice", {"n": {"n": 1}, "l": [1]}, 7, None, MediaState.LIVE),
    "none": ("alice", None, 8, None, MediaState.LIVE),
    "null": ("alice", {"n": None}, 9, None, MediaState.LIVE),
    "keys": ("alice", {'we"ird': "yes", "a.b": "dot", "é": "café"}, 10, None, MediaState.LIVE),
    "tie_b": ("alice", {"campaign": "summer"}, 11, None, MediaState.LIVE),
    "tie_a": ("alice", {"campaign": "summer"}, 11, None, MediaState.LIVE),
    "micro": ("alice", {}, 11.000001, None, MediaState.LIVE),
    "pending": ("alice", {"n": 1, "campaign": "summer"}, 12, "vec-int1", MediaState.PENDING),
    "bob1": ("bob", {"n": 1, "campaign": "summer"}, 1, "vec-int1", MediaState.LIVE),
}
ALICE_LIVE = [name for name, row in ROWS.items() if row[0] == "alice" and row[4] == "live"]
# (created_at, id) order: tie_a before tie_b, both a microsecond before micro.
ORDER = [name for name in ALICE_LIVE if name not in ("tie_a", "tie_b", "micro")]
ORDER += ["tie_a", "tie_b", "micro"]


def mid(name: str) -> str:
    return f"vec-{name}"


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    database = Database(settings_for(tmp_path, "qdrant-local")["DATABASE_URL"])
    database.upgrade_schema()
    with database.unit_of_work() as uow:
        for name, (owner, metadata, seconds, parent, state) in ROWS.items():
            uow.session.add(
                Media(
                    id=mid(name),
                    owner=owner,
                    state=state,
                    metadata_=metadata,
                    hd_count=1,
                    ld_count=1,
                    created_at=T0 + timedelta(seconds=seconds),
                    parent_id=parent,
                )
            )
        uow.commit()
    yield database
    database.dispose()


def matching(db: Database, media_filter: MediaFilter, owner: str = "alice") -> list[str]:
    """Names of the media the filter picks, in (created_at, id) order."""
    query = (
        select(Media.id)
        .where(filter_clause(owner, media_filter))
        .order_by(Media.created_at, Media.id)
    )
    with db.unit_of_work() as uow:
        return [media_id.removeprefix("vec-") for media_id in uow.session.scalars(query)]


def picked(db: Database, selection: Selection, owner: str = "alice") -> list[str]:
    with db.unit_of_work() as uow:
        found = uow.session.scalars(selected_ids(owner, selection))
        return [media_id.removeprefix("vec-") for media_id in found]


def test_the_empty_filter_is_every_live_media_of_the_owner(db: Database) -> None:
    assert matching(db, MediaFilter()) == ORDER
    assert matching(db, MediaFilter(), owner="bob") == ["bob1"]
    assert matching(db, MediaFilter(), owner="carol") == []


@pytest.mark.parametrize(
    ("value", "names"),
    [
        (1, ["int1", "float1"]),
        (1.0, ["int1", "float1"]),
        ("1", ["str1"]),
        (True, ["true"]),
        (False, ["false"]),
        (0, ["zero"]),
        (9007199254740993, ["big"]),
        (9007199254740992, []),
        ("null", []),
    ],
)
def test_metadata_equality_never_confuses_types(
    db: Database, value: str | int | float | bool, names: list[str]
) -> None:
    assert matching(db, MediaFilter(metadata={"n": value})) == names


def test_a_string_true_is_not_the_boolean(db: Database) -> None:
    assert matching(db, MediaFilter(metadata={"s": "true"})) == ["zero"]
    assert matching(db, MediaFilter(metadata={"s": True})) == []


def test_keys_are_top_level_names_not_paths(db: Database) -> None:
    assert matching(db, MediaFilter(metadata={"a.b": "dot"})) == ["keys"]
    assert matching(db, MediaFilter(metadata={'we"ird': "yes"})) == ["keys"]
    assert matching(db, MediaFilter(metadata={'we"ird': "no"})) == []
    assert matching(db, MediaFilter(metadata={"é": "café"})) == ["keys"]
    assert matching(db, MediaFilter(metadata={"a": "dot"})) == []


def test_several_keys_are_anded(db: Database) -> None:
    assert matching(db, MediaFilter(metadata={"campaign": "summer"})) == [
        "str1",
        "int1",
        "tie_a",
        "tie_b",
    ]
    assert matching(db, MediaFilter(metadata={"campaign": "summer", "n": 1})) == ["int1"]


def test_created_before_is_exclusive_and_created_after_inclusive(db: Database) -> None:
    at = T0 + timedelta(seconds=11)

    assert matching(db, MediaFilter(created_after=at)) == ["tie_a", "tie_b", "micro"]
    assert matching(db, MediaFilter(created_before=at))[-1] == "keys"
    assert "tie_a" not in matching(db, MediaFilter(created_before=at))
    assert matching(db, MediaFilter(created_after=at, created_before=at)) == []
    micro = at + timedelta(microseconds=1)
    assert matching(db, MediaFilter(created_after=at, created_before=micro)) == ["tie_a", "tie_b"]


def test_parent_and_everything_together(db: Database) -> None:
    assert matching(db, MediaFilter(parent_id="vec-int1")) == ["true", "false"]
    combined = MediaFilter(
        created_after=T0 + timedelta(seconds=3),
        created_before=T0 + timedelta(seconds=4),
        parent_id="vec-int1",
        metadata={"campaign": "winter", "n": True},
    )
    assert matching(db, combined) == ["true"]
    assert matching(db, combined, owner="bob") == []


def test_a_selection_is_the_union_of_its_items_each_minus_its_exclude(db: Database) -> None:
    selection = parse_selection(
        [
            "vec-nested",  # plain ids are the caller's to add
            {"filter": {"metadata": {"campaign": "summer"}}, "exclude": ["vec-tie_a"]},
            {"children": "vec-int1", "exclude": ["vec-false"]},
            {"filter": {"metadata": {"n": 1}}, "exclude": ["vec-int1"]},
        ]
    )

    # int1 is excluded by the last item only: the summer item still picks it, once.
    assert picked(db, selection) == ["str1", "int1", "float1", "true", "tie_b"]


def test_all_minus_exclude_and_children(db: Database) -> None:
    everything = parse_selection([{"all": True, "exclude": ["vec-str1", "vec-bob1"]}])
    assert picked(db, everything) == ORDER[1:]
    assert picked(db, everything, owner="bob") == []
    assert picked(db, parse_selection([{"all": True}]), owner="bob") == ["bob1"]
    assert picked(db, parse_selection([{"children": "vec-true"}])) == ["zero"]
    assert picked(db, parse_selection([{"children": "vec-nothing"}])) == []


def test_plain_ids_alone_select_nothing_here(db: Database) -> None:
    assert picked(db, parse_selection(["vec-str1", "vec-int1"])) == []


def test_it_counts_as_a_subquery_and_fills_a_manifest(db: Database) -> None:
    selection = parse_selection([{"all": True}, {"children": "vec-int1"}])
    manifest = Table("test_manifest", MetaData(), Column("media_id", String(128)))
    with db.unit_of_work() as uow:
        manifest.create(uow.session.connection())
        count = uow.session.scalar(
            select(func.count()).select_from(selected_ids("alice", selection).subquery())
        )
        uow.session.execute(
            insert(manifest).from_select(["media_id"], selected_ids("alice", selection))
        )
        stored = list(uow.session.scalars(select(manifest.c.media_id)))
        manifest.drop(uow.session.connection())
        uow.commit()

    assert count == len(ORDER)
    assert sorted(stored) == sorted(mid(name) for name in ORDER)


def test_the_compiled_statement_binds_every_value(db: Database) -> None:
    selection = parse_selection([{"filter": {"metadata": {"k'; DROP TABLE media; --": "x'"}}}])

    assert picked(db, selection) == []
    assert matching(db, MediaFilter()) == ORDER
