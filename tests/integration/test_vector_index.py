"""The VectorIndex port's contract, on the embedded engine and on a Qdrant server stand-in."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from wickson_batch.vectors.base import (
    Space,
    VectorIndex,
    VectorPoint,
    VectorStoreError,
    VectorStoreLocked,
    point_id,
    point_ids_for,
)
from wickson_batch.vectors.edge import EdgeIndex
from wickson_batch.vectors.server import ServerIndex, connect

DIMS: dict[Space, int] = {"hd": 8, "ld": 4}
ADAPTERS = ("edge", "server")


def open_index(adapter: str, folder: Path) -> VectorIndex:
    """Return an ensured index of the given adapter with its data under `folder`."""
    index: VectorIndex
    if adapter == "edge":
        index = EdgeIndex(str(folder), DIMS)
    else:
        index = ServerIndex(connect(":memory:"), DIMS)
    index.ensure()
    return index


@pytest.fixture(params=ADAPTERS)
def index(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[VectorIndex]:
    opened = open_index(str(request.param), tmp_path)
    yield opened
    opened.close()


@pytest.fixture
def edge(tmp_path: Path) -> Iterator[EdgeIndex]:
    opened = EdgeIndex(str(tmp_path), DIMS)
    opened.ensure()
    yield opened
    opened.close()


def unit(dim: int, axis: int, other: int | None = None) -> list[float]:
    """Return a vector along `axis` (plus an equal part along `other`, if given)."""
    values = [0.0] * dim
    values[axis] = 1.0
    if other is not None:
        values[other] = 1.0
    return values


def points_of(
    media_id: str, space: Space, count: int, owner: str = "alice", axis: int = 0
) -> list[VectorPoint]:
    """Return `count` points of one media, with its deterministic ids."""
    return [
        VectorPoint(pid, unit(DIMS[space], (axis + n) % DIMS[space]), media_id, owner)
        for n, pid in enumerate(point_ids_for(media_id, space, count))
    ]


# Point ids


def test_point_id_is_stable_for_the_same_media_space_and_index() -> None:
    assert point_id("m", "hd", 0) == point_id("m", "hd", 0)
    assert point_id("m", "hd", 0) == uuid.uuid5(
        uuid.UUID("6f1d9f3e-8d1a-5b0e-9c55-2a7b1f0c4e11"), "m/hd/0"
    )


def test_point_id_differs_per_space_index_and_media() -> None:
    ids = {
        point_id("m", "hd", 0),
        point_id("m", "ld", 0),
        point_id("m", "hd", 1),
        point_id("n", "hd", 0),
    }

    assert len(ids) == 4


def test_point_ids_for_lists_every_index_in_order() -> None:
    assert point_ids_for("m", "ld", 3) == [point_id("m", "ld", n) for n in range(3)]
    assert point_ids_for("m", "ld", 0) == []


# The contract, on both adapters


def test_ensure_is_idempotent_and_keeps_points(index: VectorIndex) -> None:
    index.upsert("hd", points_of("m", "hd", 3))

    index.ensure()
    index.ensure()

    assert index.count("hd") == 3


def test_new_index_is_empty(index: VectorIndex) -> None:
    assert (index.count("hd"), index.count("ld")) == (0, 0)


def test_upsert_then_count_in_total_and_per_media(index: VectorIndex) -> None:
    index.upsert("hd", points_of("a", "hd", 3) + points_of("b", "hd", 2))
    index.upsert("ld", points_of("a", "ld", 1))

    assert index.count("hd") == 5
    assert index.count("hd", "a") == 3
    assert index.count("hd", "b") == 2
    assert index.count("hd", "missing") == 0
    assert (index.count("ld"), index.count("ld", "a"), index.count("ld", "b")) == (1, 1, 0)


def test_upsert_with_the_same_ids_replaces(index: VectorIndex) -> None:
    index.upsert("hd", points_of("a", "hd", 3, axis=0))

    index.upsert("hd", points_of("a", "hd", 3, axis=4))

    assert index.count("hd") == 3
    assert [hit.media_id for hit in index.search("hd", unit(8, 4), "alice", 1)] == ["a"]
    assert index.search("hd", unit(8, 4), "alice", 1)[0].score == pytest.approx(1.0, abs=1e-5)


def test_delete_removes_exactly_the_given_ids(index: VectorIndex) -> None:
    index.upsert("hd", points_of("a", "hd", 3) + points_of("b", "hd", 2))

    index.delete("hd", [point_id("a", "hd", 0), point_id("a", "hd", 2)])

    assert index.count("hd", "a") == 1
    assert index.count("hd", "b") == 2
    assert {p.id for page in index.scan("hd") for p in page} == {
        point_id("a", "hd", 1),
        *point_ids_for("b", "hd", 2),
    }


def test_delete_ignores_absent_ids(index: VectorIndex) -> None:
    index.upsert("hd", points_of("a", "hd", 2))

    index.delete("hd", [point_id("a", "hd", 1), point_id("never", "hd", 0), uuid.uuid4()])

    assert index.count("hd") == 1
    assert index.count("hd", "a") == 1


def test_delete_touches_only_its_space(index: VectorIndex) -> None:
    index.upsert("hd", points_of("a", "hd", 2))
    index.upsert("ld", points_of("a", "ld", 2))

    index.delete("hd", point_ids_for("a", "hd", 2))

    assert (index.count("hd"), index.count("ld")) == (0, 2)


def test_delete_of_an_empty_list_is_a_no_op(index: VectorIndex) -> None:
    index.upsert("ld", points_of("a", "ld", 2))

    index.delete("ld", [])

    assert index.count("ld") == 2


def test_search_returns_only_the_owners_points_best_first(index: VectorIndex) -> None:
    index.upsert(
        "hd",
        [
            VectorPoint(point_id("far", "hd", 0), unit(8, 1), "far", "alice"),
            VectorPoint(point_id("near", "hd", 0), unit(8, 0), "near", "alice"),
            VectorPoint(point_id("mid", "hd", 0), unit(8, 0, 1), "mid", "alice"),
            VectorPoint(point_id("theirs", "hd", 0), unit(8, 0), "theirs", "bob"),
        ],
    )

    hits = index.search("hd", unit(8, 0), "alice", 10)

    assert [hit.media_id for hit in hits] == ["near", "mid", "far"]
    assert [hit.score for hit in hits] == pytest.approx([1.0, 0.5**0.5, 0.0], abs=1e-5)


def test_search_returns_at_most_limit_hits(index: VectorIndex) -> None:
    index.upsert("ld", points_of("a", "ld", 4) + points_of("b", "ld", 4))

    assert len(index.search("ld", unit(4, 0), "alice", 3)) == 3


def test_search_of_an_owner_without_points_is_empty(index: VectorIndex) -> None:
    index.upsert("hd", points_of("a", "hd", 2, owner="alice"))

    assert index.search("hd", unit(8, 0), "carol", 10) == []


def test_scan_yields_every_point_once_across_pages(index: VectorIndex) -> None:
    media_ids = [f"m{n}" for n in range(9)]
    for media_id in media_ids:
        index.upsert("ld", points_of(media_id, "ld", 3))
    expected = {pid: m for m in media_ids for pid in point_ids_for(m, "ld", 3)}

    pages = list(index.scan("ld", batch_size=5))

    seen = [point for page in pages for point in page]
    assert all(1 <= len(page) <= 5 for page in pages)
    assert len(seen) == 27
    assert all(isinstance(point.id, uuid.UUID) for point in seen)
    assert {point.id: point.media_id for point in seen} == expected


def test_scan_of_an_empty_space_yields_nothing(index: VectorIndex) -> None:
    assert list(index.scan("hd", batch_size=5)) == []


def test_ping_answers(index: VectorIndex) -> None:
    index.ping()


# The embedded engine


def test_edge_data_survives_close_and_reopen(tmp_path: Path) -> None:
    first = EdgeIndex(str(tmp_path), DIMS)
    first.ensure()
    first.upsert("hd", points_of("a", "hd", 3))
    first.upsert("ld", points_of("a", "ld", 2))
    first.close()

    again = EdgeIndex(str(tmp_path), DIMS)
    again.ensure()
    try:
        assert (again.count("hd", "a"), again.count("ld", "a")) == (3, 2)
    finally:
        again.close()


def test_edge_second_open_on_the_same_folder_is_locked(edge: EdgeIndex, tmp_path: Path) -> None:
    second = EdgeIndex(str(tmp_path), DIMS)

    with pytest.raises(VectorStoreLocked, match="stop the server"):
        second.ensure()


def test_edge_lock_is_released_by_close(edge: EdgeIndex, tmp_path: Path) -> None:
    edge.upsert("hd", points_of("a", "hd", 1))
    edge.close()

    second = EdgeIndex(str(tmp_path), DIMS)
    second.ensure()
    try:
        assert second.count("hd") == 1
    finally:
        second.close()


def test_edge_reopen_with_other_dims_names_the_setting(tmp_path: Path) -> None:
    first = EdgeIndex(str(tmp_path), DIMS)
    first.ensure()
    first.close()

    other = EdgeIndex(str(tmp_path), {"hd": 16, "ld": 4})

    with pytest.raises(VectorStoreError, match="HD_DIM=16"):
        other.ensure()


def test_edge_closed_index_refuses_work(tmp_path: Path) -> None:
    closed = EdgeIndex(str(tmp_path), DIMS)
    closed.ensure()
    closed.close()

    with pytest.raises(VectorStoreError, match="closed"):
        closed.count("hd")


def test_edge_unflushed_delete_survives_a_process_exit_without_close(
    edge: EdgeIndex, tmp_path: Path
) -> None:
    edge.upsert("hd", points_of("a", "hd", 3) + points_of("b", "hd", 2))
    edge.close()
    script = textwrap.dedent(
        f"""
        import os
        from wickson_batch.vectors.base import point_ids_for
        from wickson_batch.vectors.edge import EdgeIndex

        index = EdgeIndex({str(tmp_path)!r}, {{"hd": 8, "ld": 4}})
        index.ensure()
        index.delete("hd", point_ids_for("a", "hd", 3))
        os._exit(0)
        """
    )

    done = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=120)

    assert done.returncode == 0, done.stderr
    again = EdgeIndex(str(tmp_path), DIMS)
    again.ensure()
    try:
        assert (again.count("hd"), again.count("hd", "a"), again.count("hd", "b")) == (2, 0, 2)
    finally:
        again.close()


# The server adapter


def test_server_ensure_refuses_a_collection_with_other_dims() -> None:
    client = connect(":memory:")
    ServerIndex(client, DIMS).ensure()

    other = ServerIndex(client, {"hd": 8, "ld": 16})
    try:
        with pytest.raises(VectorStoreError, match="LD_DIM=16"):
            other.ensure()
    finally:
        other.close()
