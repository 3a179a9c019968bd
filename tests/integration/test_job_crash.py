"""Deletion jobs on the real server: SIGKILLed again and again while one runs, or cancelled.

The job ends `done` with exact counts, every manifest id reported exactly once, every
deleted media gone from SQL and from both collections, no orphan point after reconcile,
and nothing outside the selection touched, nor anything created after the job started.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.live_server import Server, check_figures, scan_points, sql, wait_until

pytestmark = pytest.mark.slow

MEDIA = 20_000
EXCLUDED = 25
HD, LD = 2, 1
KILLS = 4


def job_counts(tmp_path: Path, job_id: str) -> dict[str, Any]:
    """The job's counters and its manifest's tallies, read from SQLite directly."""
    ((status, total, deleted, failed, hd, ld),) = sql(
        tmp_path,
        "SELECT status, total, deleted, failed, hd_vectors, ld_vectors FROM deletion_jobs"
        " WHERE id = ?",
        job_id,
    )
    items = dict(
        sql(
            tmp_path,
            "SELECT status, count(*) FROM deletion_job_items WHERE job_id = ? GROUP BY status",
            job_id,
        )
    )
    return {
        "status": status,
        "total": total,
        "deleted": deleted,
        "failed": failed,
        "hd": hd,
        "ld": ld,
        "items": items,
    }


def assert_consistent(counts: dict[str, Any], hd: int = HD, ld: int = LD) -> None:
    """What a poll may see at any moment: counters that match the manifest and add up.

    Every media has `hd` and `ld` points.
    """
    if counts["total"] is None:
        assert counts["items"] == {} and counts["deleted"] == counts["failed"] == 0
        return
    items = counts["items"]
    assert items.get("deleted", 0) == counts["deleted"]
    assert items.get("failed", 0) == counts["failed"]
    assert sum(items.values()) == counts["total"]
    assert counts["hd"] == hd * counts["deleted"] and counts["ld"] == ld * counts["deleted"]


def test_sigkill_while_a_job_runs_loses_and_repeats_nothing(
    job_server: Callable[..., Server], tmp_path: Path
) -> None:
    # Slow enough that the kills land mid-job.
    server = job_server(JOB_MAX_MEDIA_PER_SECOND="4000")
    began = time.monotonic()
    key = server.cli("keys", "create", "--owner", "acme").stdout.strip()
    seeded = server.cli(
        "seed", "--owner", "acme", "--count", str(MEDIA), "--hd-per-media", str(HD),
        "--ld-per-media", str(LD),
    )  # fmt: skip
    others = server.cli("seed", "--owner", "other", "--count", "30").stdout.split()
    ids = seeded.stdout.split()
    assert len(ids) == MEDIA and len(others) == 30
    excluded = ids[:: MEDIA // EXCLUDED][:EXCLUDED]
    seeded_at = time.monotonic()

    server.start()
    status, payload, headers = server.request(
        "POST", "/v1/deletion-jobs", {"selection": [{"all": True, "exclude": excluded}]}, key
    )
    assert status == 202, payload
    job_id = payload["data"]["job_id"]
    assert headers["Location"] == f"/v1/deletion-jobs/{job_id}"
    wait_until(lambda: job_counts(tmp_path, job_id)["status"] == "processing")
    later = []  # created after the manifest was fixed: never touched
    for n in range(5):
        created = server.request(
            "POST", "/v1/media", {"hd_vectors": [[0.5 + n] * 8], "ld_vectors": [[1.0] * 4]}, key
        )
        assert created[0] == 201, created
        later.append(created[1]["data"]["media_id"])

    rng = random.Random(13)
    at_kill: list[int] = []
    for _ in range(KILLS):
        time.sleep(rng.uniform(0.8, 1.6))
        server.kill()
        counts = job_counts(tmp_path, job_id)
        assert_consistent(counts)
        at_kill.append(counts["deleted"])
        server.start()
        status, payload, _ = server.request("GET", f"/v1/deletion-jobs/{job_id}", key=key)
        assert status == 200
        shown = payload["data"]["progress"]
        assert shown["deleted"] + shown["failed"] + shown["remaining"] == shown["total"]
    assert at_kill[-1] < MEDIA - EXCLUDED, "the job ended before the last kill: slow it down"

    wait_until(lambda: job_counts(tmp_path, job_id)["status"] == "done", timeout=60)
    status, payload, _ = server.request("GET", f"/v1/deletion-jobs/{job_id}", key=key)
    total = MEDIA - EXCLUDED
    assert payload["data"]["progress"] == {
        "total": total,
        "remaining": 0,
        "deleted": total,
        "failed": 0,
        "hd_vectors": HD * total,
        "ld_vectors": LD * total,
    }
    # Every manifest id reported exactly once, deleted, and each chunk its own operation.
    reported = sql(
        tmp_path, "SELECT media_id, status FROM deletion_job_items WHERE job_id = ?", job_id
    )
    assert len(reported) == total and len({m for m, _ in reported}) == total
    assert {s for _, s in reported} == {"deleted"}
    doomed = set(ids) - set(excluded)
    assert {m for m, _ in reported} == doomed
    wait_until(lambda: sql(tmp_path, "SELECT count(*) FROM cleanup_tasks")[0][0] == 0)
    time.sleep(1.0)  # the start-up orphan scan of the last unclean start
    assert server.stop() == 0

    rows = dict(sql(tmp_path, "SELECT id, state FROM media"))
    assert not doomed & set(rows)
    kept = [*excluded, *others, *later]
    assert all(rows.get(m) == "live" for m in kept)
    points = scan_points(server.env)
    assert not doomed & (set(points["hd"]) | set(points["ld"]))
    assert all(points["hd"].get(m) == HD and points["ld"].get(m) == LD for m in excluded)
    assert all(points["hd"].get(m) == 1 and points["ld"].get(m) == 1 for m in later)
    figures = check_figures(server)
    assert figures["exit"] == 0 and figures["orphans"] == 0 and figures["missing"] == 0
    print(
        f"\njob crash figures: {MEDIA} media ({HD}+{LD} points each), {KILLS} SIGKILLs at "
        f"deleted={at_kill}, total {total} deleted exactly once; seeding "
        f"{seeded_at - began:.1f} s, job and kills {time.monotonic() - seeded_at:.1f} s"
    )


def test_cancelling_a_running_job_keeps_what_it_deleted_and_spares_the_rest(
    job_server: Callable[..., Server], tmp_path: Path
) -> None:
    server = job_server(JOB_MAX_MEDIA_PER_SECOND="300", JOB_CHUNK_SIZE="50")
    key = server.cli("keys", "create", "--owner", "acme").stdout.strip()
    ids = server.cli("seed", "--owner", "acme", "--count", "3000").stdout.split()
    assert len(ids) == 3000
    server.start()
    status, payload, _ = server.request(
        "POST", "/v1/deletion-jobs", {"selection": [{"all": True}], "reason": "oops"}, key
    )
    job_id = payload["data"]["job_id"]
    wait_until(lambda: job_counts(tmp_path, job_id)["deleted"] >= 200)

    status, payload, _ = server.request("POST", f"/v1/deletion-jobs/{job_id}/cancel", key=key)

    assert status == 200
    assert payload["data"]["status"] in ("processing", "cancelled")  # until its chunk commits
    wait_until(lambda: job_counts(tmp_path, job_id)["status"] == "cancelled")
    settled = job_counts(tmp_path, job_id)
    assert_consistent(settled, hd=1, ld=1)
    time.sleep(0.5)  # nothing moves after the cancel
    assert job_counts(tmp_path, job_id) == settled
    status, payload, _ = server.request("GET", f"/v1/deletion-jobs/{job_id}", key=key)
    shown = payload["data"]
    assert shown["status"] == "cancelled" and shown["finished_at"] is not None
    deleted = settled["deleted"]
    assert 200 <= deleted < 3000
    assert shown["progress"] == {
        "total": 3000,
        "remaining": 3000 - deleted,
        "deleted": deleted,
        "failed": 0,
        "hd_vectors": deleted,
        "ld_vectors": deleted,
    }
    # What it reports deleted is gone; everything else is live, and it says so.
    reported: list[str] = []
    cursor = None
    while True:
        query = "?status=deleted&limit=100" + (f"&cursor={cursor}" if cursor else "")
        page = server.request("GET", f"/v1/deletion-jobs/{job_id}/items{query}", key=key)[1]
        reported.extend(item["media_id"] for item in page["data"]["items"])
        if not page["data"]["has_more"]:
            break
        cursor = page["data"]["next_cursor"]
    assert len(reported) == len(set(reported)) == deleted
    live = {row[0] for row in sql(tmp_path, "SELECT id FROM media WHERE state = 'live'")}
    assert not live & set(reported)
    assert live == set(ids) - set(reported)
    for media_id in reported[:20]:
        assert server.request("GET", f"/v1/media/{media_id}", key=key)[0] == 404
    again = server.request("POST", f"/v1/deletion-jobs/{job_id}/cancel", key=key)
    assert (again[0], again[1]["error"]["code"]) == (409, "JOB_FINISHED")
    wait_until(lambda: sql(tmp_path, "SELECT count(*) FROM cleanup_tasks")[0][0] == 0)
    assert server.stop() == 0
    points = scan_points(server.env)
    assert set(points["hd"]) == set(points["ld"]) == live
    print(f"\ncancel figures: cancelled after {deleted} of 3000 deleted, the rest live")
