"""Crash safety: SIGKILL the real server mid-flight, restart it, and check the invariant.

No acknowledged deletion comes back; every media is live with all its points or gone with
none; after the reconciler has run no point lacks its media row.
"""

from __future__ import annotations

import http.client
import itertools
import random
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.live_server import (
    Server,
    check_figures,
    local_url,
    scan_points,
    server_env,
    sql,
    wait_until,
)

pytestmark = pytest.mark.slow

HD, LD = 3, 2  # points per media in each space
THREADS = 6
BATCH = 20
KILL_CYCLES = 4


@pytest.fixture
def crash_server(tmp_path: Path) -> Iterator[Server]:
    env = server_env(
        tmp_path,
        LOG_LEVEL="ERROR",
        RATE_LIMIT_DEFAULT="1000000/minute",
        RECONCILE_INTERVAL_SECONDS="0.2",
        # Long enough that a creation still writing its points is not claimed under it.
        RECONCILE_GRACE_SECONDS="1",
    )
    running = Server(local_url(env), env)
    yield running
    if running.process is not None:
        running.kill()


# What a client sees when the server dies under its request.
CUT_OFF = (OSError, ValueError, http.client.HTTPException)


@dataclass
class Tally:
    """What the clients saw, shared by the firing threads."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    batches_sent: int = 0
    batches_acknowledged: int = 0
    acknowledged: dict[str, str] = field(default_factory=dict)  # media id -> operation id
    in_doubt: int = 0  # sent, no answer: the kill came first
    unexpected: list[str] = field(default_factory=list)  # answers other than 200


def fire_batches(server: Server, key: str, ids: list[str], tally: Tally, seed: int) -> None:
    """Send overlapping batches until the server dies."""
    rng = random.Random(seed)
    for n in itertools.count():
        batch = rng.sample(ids, BATCH)
        method, path = (
            ("DELETE", "/v1/media/batch") if n % 2 else ("POST", "/v1/media/batch/delete")
        )
        with tally.lock:
            tally.batches_sent += 1
        try:
            status, payload, _ = server.request(method, path, {"media_ids": batch}, key)
        except CUT_OFF:  # connection refused, reset or cut mid-answer: the server is gone
            with tally.lock:
                tally.in_doubt += 1
            return
        if status != 200:
            with tally.lock:
                tally.unexpected.append(f"{status} {payload}")
            return
        deleted = payload["data"]["deleted"]
        with tally.lock:
            tally.batches_acknowledged += 1
            for media_id in deleted["media_ids"]:
                assert media_id not in tally.acknowledged, f"{media_id} deleted twice"
                tally.acknowledged[media_id] = payload["metadata"]["operation_id"]


def test_sigkill_mid_batch_never_loses_an_acknowledged_deletion(
    crash_server: Server, tmp_path: Path
) -> None:
    server = crash_server
    key = server.cli("keys", "create", "--owner", "acme").stdout.strip()
    seeded = server.cli(
        "seed", "--owner", "acme", "--count", "3000", "--hd-per-media", str(HD),
        "--ld-per-media", str(LD),
    )  # fmt: skip
    other = server.cli("seed", "--owner", "other", "--count", "50", "--hd-per-media", "2")
    ids, others = seeded.stdout.split(), other.stdout.split()
    assert len(ids) == 3000 and len(others) == 50
    tally = Tally()
    rng = random.Random(3)
    orphans_before_reconcile = []

    for cycle in range(KILL_CYCLES):
        server.start()
        for media_id in list(tally.acknowledged)[-50:]:  # acknowledged earlier: still gone
            assert server.request("GET", f"/v1/media/{media_id}", key=key)[0] == 404
        threads = [
            threading.Thread(
                target=fire_batches, args=(server, key, ids, tally, cycle * 100 + t), daemon=True
            )
            for t in range(THREADS)
        ]
        for thread in threads:
            thread.start()
        time.sleep(rng.uniform(0.4, 1.0))
        server.kill()  # SIGKILL to the process group, mid-flight
        for thread in threads:
            thread.join(15)
            assert not thread.is_alive()
        assert not tally.unexpected, tally.unexpected
        # What the kill left before any reconcile: rows gone, points maybe not yet.
        orphans_before_reconcile.append(check_figures(server)["orphans"])

    # Acknowledged means committed: not one of them is in SQL, even before a restart.
    acknowledged = set(tally.acknowledged)
    live = {row[0] for row in sql(tmp_path, "SELECT id FROM media")}
    assert not acknowledged & live

    server.start()  # unclean stop: start-up scans for orphans, then drains cleanup tasks
    wait_until(lambda: sql(tmp_path, "SELECT count(*) FROM cleanup_tasks")[0][0] == 0)
    for media_id in sorted(acknowledged)[:100]:
        status, payload, _ = server.request("GET", f"/v1/media/{media_id}", key=key)
        assert (status, payload["error"]["code"]) == (404, "MEDIA_NOT_FOUND")
    time.sleep(1.0)  # let the start-up orphan scan finish (milliseconds at this size)
    assert server.stop() == 0

    figures = check_figures(server)
    points = scan_points(server.env)
    rows: dict[str, str] = dict(sql(tmp_path, "SELECT id, state FROM media"))
    # Every media: live with all its points, or gone with none.
    for media_id in ids:
        expected = (HD, LD) if rows.get(media_id) == "live" else (0, 0)
        assert (points["hd"].get(media_id, 0), points["ld"].get(media_id, 0)) == expected
    assert all(rows.get(m) == "live" and points["hd"].get(m) == 2 for m in others)
    assert not set(points["hd"]) - set(rows) and not set(points["ld"]) - set(rows)
    assert figures["exit"] == 0 and figures["orphans"] == 0 and figures["missing"] == 0
    assert set(rows.values()) == {"live"} and figures["pending_tasks"] == 0

    print(
        f"\ncrash figures: kill cycles {KILL_CYCLES}, batches fired {tally.batches_sent}, "
        f"acknowledged {tally.batches_acknowledged}, in doubt at a kill {tally.in_doubt}, "
        f"acknowledged deletions verified {len(acknowledged)}, "
        f"deleted without an answer {sum(1 for m in ids if m not in rows) - len(acknowledged)}, "
        f"orphan points left by each kill {orphans_before_reconcile}, "
        f"orphans after reconcile {figures['orphans']}, media missing points {figures['missing']}"
    )


@dataclass
class Creations:
    """What the creating clients saw."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    sent: int = 0
    acknowledged: dict[str, tuple[int, int]] = field(default_factory=dict)
    unexpected: list[str] = field(default_factory=list)


def fire_creations(server: Server, key: str, made: Creations, seed: int) -> None:
    """Create media until the server dies."""
    rng = random.Random(seed)
    while True:
        hd, ld = rng.randint(0, 4), rng.randint(1, 3)
        payload = {
            "title": "crash",
            "hd_vectors": [[rng.uniform(0.1, 1.0) for _ in range(8)] for _ in range(hd)],
            "ld_vectors": [[rng.uniform(0.1, 1.0) for _ in range(4)] for _ in range(ld)],
        }
        with made.lock:
            made.sent += 1
        try:
            status, body, _ = server.request("POST", "/v1/media", payload, key)
        except CUT_OFF:
            return
        if status != 201:
            with made.lock:
                made.unexpected.append(f"{status} {body}")
            return
        with made.lock:
            made.acknowledged[body["data"]["media_id"]] = (hd, ld)


def test_sigkill_mid_creation_leaves_nothing_visible_or_orphaned(
    crash_server: Server, tmp_path: Path
) -> None:
    server = crash_server
    key = server.cli("keys", "create", "--owner", "acme").stdout.strip()
    made = Creations()
    rng = random.Random(5)
    pending_at_kill: list[int] = []

    for cycle in range(3):
        server.start()
        threads = [
            threading.Thread(target=fire_creations, args=(server, key, made, cycle * 10 + t))
            for t in range(THREADS)
        ]
        for thread in threads:
            thread.start()
        time.sleep(rng.uniform(0.4, 1.0))
        server.kill()
        for thread in threads:
            thread.join(15)
            assert not thread.is_alive()
        assert not made.unexpected, made.unexpected
        pending = [row[0] for row in sql(tmp_path, "SELECT id FROM media WHERE state = 'pending'")]
        pending_at_kill.append(len(pending))
        server.start()
        # A creation cut between its row and `live` is never readable, before or after cleanup.
        for media_id in pending:
            assert server.request("GET", f"/v1/media/{media_id}", key=key)[0] == 404
        wait_until(
            lambda: (
                sql(
                    tmp_path,
                    "SELECT (SELECT count(*) FROM media WHERE state = 'pending')"
                    " + (SELECT count(*) FROM cleanup_tasks)",
                )[0][0]
                == 0
            )
        )
        for media_id in pending:
            assert server.request("GET", f"/v1/media/{media_id}", key=key)[0] == 404
        time.sleep(0.5)  # the start-up orphan scan
        assert server.stop() == 0

    figures = check_figures(server)
    points = scan_points(server.env)
    rows: dict[str, str] = dict(sql(tmp_path, "SELECT id, state FROM media"))
    assert set(made.acknowledged) <= set(rows)  # every acknowledged creation survived
    for media_id, (hd, ld) in made.acknowledged.items():
        assert (points["hd"].get(media_id, 0), points["ld"].get(media_id, 0)) == (hd, ld)
    for media_id, hd, ld in sql(tmp_path, "SELECT id, hd_count, ld_count FROM media"):
        assert (points["hd"].get(media_id, 0), points["ld"].get(media_id, 0)) == (hd, ld)
    assert set(rows.values()) <= {"live"}
    assert not (set(points["hd"]) | set(points["ld"])) - set(rows)
    assert figures["exit"] == 0 and figures["orphans"] == 0 and figures["missing"] == 0

    print(
        f"\ncreation crash figures: kill cycles 3, creations sent {made.sent}, "
        f"acknowledged {len(made.acknowledged)} (all live with their points), "
        f"rows in pending at each kill {pending_at_kill}, live rows unacknowledged "
        f"{len(set(rows) - set(made.acknowledged))}, orphans after reconcile {figures['orphans']}"
    )
