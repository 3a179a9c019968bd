"""The VectorIndex port's contract, on the embedded engine and on a Qdrant server stand-in."""

from __future__ import annotations

import socket
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest
from qdrant_client import models
from structlog.testing import capture_logs

from tests.qdrant_standin import StandInServer, running
from wickson_batch.config import load_settings
from wickson_batch.vectors import build_vector_index
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
from wickson_batch.vectors.server import ClusterOptions, ServerIndex, connect

DIMS: dict[Space, int] = {"hd": 8, "ld": 4}
# "server": qdrant-client's local mode in this process; "standin": the same over Qdrant's REST
# API (tests/qdrant_standin.py), with every cluster option set.
ADAPTERS = ("edge", "server", "standin")
CLUSTERED = ClusterOptions(
    shard_number=3,
    replication_factor=2,
    write_consistency_factor=2,
    ordering=models.WriteOrdering.STRONG,
    timeout_seconds=5,
)


def url_of(server: StandInServer) -> str:
    return f"http://127.0.0.1:{server.server_address[1]}"


def versions_checked() -> None:
    """Wait for qdrant-client's background version checks, which must not outlive the server.

    (Each client connecting to a URL starts one, a thread running `_check_compatibility`.)
    """
    for thread in threading.enumerate():
        if thread.name.endswith("(_check_compatibility)"):
            thread.join(timeout=10)


@pytest.fixture
def standin() -> Iterator[StandInServer]:
    with running() as server:
        yield server
        versions_checked()


def on_standin(server: StandInServer, options: ClusterOptions = CLUSTERED) -> ServerIndex:
    """Return an index on the stand-in, not yet ensured."""
    return ServerIndex(connect(url_of(server), options=options), DIMS, options)


@pytest.fixture(params=ADAPTERS)
def index(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[VectorIndex]:
    with ExitStack() as stack:
        opened: VectorIndex
        if request.param == "edge":
            opened = EdgeIndex(str(tmp_path), DIMS)
        elif request.param == "server":
            opened = ServerIndex(connect(":memory:"), DIMS)
        else:
            server = stack.enter_context(running())
            stack.callback(versions_checked)
            opened = on_standin(server)
        opened.ensure()
        stack.callback(opened.close)
        yield opened


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


# The server adapter on a cluster, as far as the stand-in shows it: what the adapter sends,
# and how it fails. What the cluster then does with the factors and the ordering (replicas
# confirming, a leader ordering writes) needs a real Qdrant cluster.


def created(server: StandInServer, collection: str) -> dict[str, object]:
    """Return the body of the one request that created `collection`."""
    [request] = server.engine.received("PUT", f"/collections/{collection}")
    assert isinstance(request.body, dict)
    return request.body


def test_server_creates_collections_with_the_configured_cluster_parameters(
    standin: StandInServer,
) -> None:
    index = on_standin(standin)

    index.ensure()
    index.close()

    for collection in ("media_hd", "media_ld"):
        body = created(standin, collection)
        assert (
            body["shard_number"],
            body["replication_factor"],
            body["write_consistency_factor"],
        ) == (3, 2, 2)


def test_server_leaves_cluster_parameters_to_qdrant_when_unset(standin: StandInServer) -> None:
    index = on_standin(standin, ClusterOptions())

    index.ensure()
    index.close()

    body = created(standin, "media_hd")
    assert {"shard_number", "replication_factor", "write_consistency_factor"} & set(body) == set()


@pytest.mark.parametrize("ordering", list(models.WriteOrdering))
def test_server_upserts_and_deletes_with_the_ordering_and_wait(
    standin: StandInServer, ordering: models.WriteOrdering
) -> None:
    index = on_standin(standin, ClusterOptions(ordering=ordering))
    index.ensure()

    index.upsert("hd", points_of("a", "hd", 2))
    index.delete("hd", point_ids_for("a", "hd", 2))
    index.close()

    expected = {"wait": "true", "ordering": ordering.value}
    [upsert] = standin.engine.received("PUT", "/collections/media_hd/points")
    [delete] = standin.engine.received("POST", "/collections/media_hd/points/delete")
    assert (upsert.query, delete.query) == (expected, expected)
    assert delete.body == {"points": [str(i) for i in point_ids_for("a", "hd", 2)]}


def test_server_refuses_a_delete_the_server_did_not_confirm_applied(
    standin: StandInServer,
) -> None:
    index = on_standin(standin)
    index.ensure()
    index.upsert("hd", points_of("a", "hd", 1))
    standin.engine.update_status = "wait_timeout"

    try:
        with pytest.raises(VectorStoreError, match="did not confirm the delete was applied"):
            index.delete("hd", point_ids_for("a", "hd", 1))
    finally:
        index.close()


def test_server_warns_once_of_an_existing_collection_with_other_parameters(
    standin: StandInServer,
) -> None:
    first = on_standin(standin, ClusterOptions())  # Qdrant's defaults: 1, 1, 1
    first.ensure()
    first.close()
    later = on_standin(standin, CLUSTERED)

    with capture_logs() as logs:
        later.ensure()
        later.ensure()
    later.close()

    warnings = [e for e in logs if e["event"] == "vectors.collection_config_differs"]
    assert [(e["log_level"], e["collection"]) for e in warnings] == [
        ("warning", "media_hd"),
        ("warning", "media_ld"),
    ]
    assert warnings[0]["differences"] == {
        "QDRANT_SHARD_NUMBER": {"collection": 1, "setting": 3},
        "QDRANT_REPLICATION_FACTOR": {"collection": 1, "setting": 2},
        "QDRANT_WRITE_CONSISTENCY_FACTOR": {"collection": 1, "setting": 2},
    }
    assert "left as it is" in warnings[0]["action"]
    # Left as it is: nothing was sent that changes a collection after its creation.
    assert standin.engine.received("PATCH") == []
    assert len(standin.engine.received("PUT", "/collections/media_hd")) == 1


def test_server_does_not_warn_of_a_collection_it_created_itself(standin: StandInServer) -> None:
    first = on_standin(standin)
    first.ensure()
    first.close()
    again = on_standin(standin)

    with capture_logs() as logs:
        again.ensure()
    again.close()

    assert [e for e in logs if e["event"] == "vectors.collection_config_differs"] == []


def test_settings_reach_the_server_adapter(standin: StandInServer, tmp_path: Path) -> None:
    settings = load_settings(
        {
            "TESTING": True,
            "DATA_DIR": str(tmp_path),
            "HD_DIM": 8,
            "LD_DIM": 4,
            "QDRANT_URL": url_of(standin),
            "QDRANT_SHARD_NUMBER": 3,
            "QDRANT_REPLICATION_FACTOR": 2,
            "QDRANT_WRITE_CONSISTENCY_FACTOR": 2,
            "QDRANT_WRITE_ORDERING": "medium",
            "QDRANT_PREFER_GRPC": True,
            "QDRANT_TIMEOUT_SECONDS": 4,
        },
        environ={},
    )

    index = build_vector_index(settings)
    index.close()

    assert isinstance(index, ServerIndex)
    assert index.options == ClusterOptions(
        shard_number=3,
        replication_factor=2,
        write_consistency_factor=2,
        ordering=models.WriteOrdering.MEDIUM,
        prefer_grpc=True,
        timeout_seconds=4,
    )


def test_a_slow_server_fails_a_delete_within_qdrant_timeout_seconds(
    standin: StandInServer, tmp_path: Path
) -> None:
    settings = load_settings(
        {
            "TESTING": True,
            "DATA_DIR": str(tmp_path),
            "HD_DIM": 8,
            "LD_DIM": 4,
            "QDRANT_URL": url_of(standin),
            "QDRANT_TIMEOUT_SECONDS": 1,
        },
        environ={},
    )
    index = build_vector_index(settings)
    index.ensure()
    standin.engine.delay_seconds = 3
    started = time.perf_counter()

    try:
        with pytest.raises(VectorStoreError, match="Qdrant failed to delete: timed out"):
            index.delete("hd", point_ids_for("a", "hd", 1))
    finally:
        index.close()

    assert time.perf_counter() - started < 2 * settings.qdrant_timeout_seconds


def closed_port() -> int:
    """Return a port of 127.0.0.1 that nothing listens on (it was free a moment ago)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_prefer_grpc_without_grpc_fails_at_once_and_never_falls_back_to_rest(
    standin: StandInServer,
) -> None:
    options = ClusterOptions(prefer_grpc=True, grpc_port=closed_port(), timeout_seconds=5)
    index = on_standin(standin, options)
    started = time.perf_counter()

    try:
        with pytest.raises(VectorStoreError, match="Qdrant failed to list collections: gRPC "):
            index.ensure()
        with pytest.raises(VectorStoreError, match="UNAVAILABLE: failed to connect"):
            index.ping()
    finally:
        index.close()

    assert time.perf_counter() - started < options.timeout_seconds
    versions_checked()
    # Only qdrant-client's version check goes over REST; the calls went to gRPC.
    assert [(r.method, r.path) for r in standin.engine.requests] == [("GET", "/")]


# Vacuum


def test_edge_counts_deletions_until_a_vacuum_rewrites_them_out(edge: EdgeIndex) -> None:
    edge.upsert("hd", [p for n in range(10) for p in points_of(f"m{n}", "hd", 2)])
    edge.delete("hd", point_ids_for("m0", "hd", 2) + point_ids_for("m1", "hd", 2))

    counted = edge.deleted_points("hd")
    assert (counted.deleted, counted.live, counted.share) == (4, 16, 0.2)
    assert counted.oldest is not None and counted.oldest <= time.time()
    assert edge.deleted_points("ld").deleted == 0

    assert edge.optimize("hd") is True
    vacuumed = edge.deleted_points("hd")
    assert (vacuumed.deleted, vacuumed.live, vacuumed.oldest) == (0, 16, None)
    assert edge.count("hd") == 16 and edge.count("hd", "m2") == 2
    assert edge.disk_bytes() > 0


@pytest.mark.parametrize("index", ["server", "standin"], indirect=True)
def test_a_qdrant_server_vacuums_itself(index: VectorIndex) -> None:
    assert index.deleted_points("hd") is None
    assert index.optimize("hd") is False
    assert index.disk_bytes() is None
