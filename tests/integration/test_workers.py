"""Several gunicorn workers on PostgreSQL, Redis and a Qdrant server, as production runs them.

The Qdrant server is tests/qdrant_standin.py (Qdrant's REST API over qdrant-client's local
mode); PostgreSQL and Redis come from WICKSON_TEST_POSTGRES_URL / WICKSON_TEST_REDIS_URL
(scripts/test-servers): without them these tests skip, under CI=true they fail.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import pytest
from qdrant_client import QdrantClient
from sqlalchemy import create_engine, text

from tests import servers
from tests.live_server import ROOT, Server, local_url, server_env
from wickson_batch.vectors.base import SPACES
from wickson_batch.vectors.server import ServerIndex

pytestmark = pytest.mark.slow

WORKERS = 3
ROUNDS = 5


@pytest.fixture
def pg_redis() -> servers.ServerUrls:
    """PostgreSQL and Redis, or a skip (a failure under CI=true) before anything starts."""
    return servers.require()


@pytest.fixture
def qdrant_url(pg_redis: servers.ServerUrls) -> Iterator[str]:
    """Start the stand-in Qdrant server on a free port of 127.0.0.1."""
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.qdrant_standin"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert line.startswith("listening on "), line
        yield f"http://127.0.0.1:{int(line.split()[-1])}"
    finally:
        process.terminate()
        process.wait(timeout=10)
        if process.stdout:
            process.stdout.close()


@dataclass
class Workers(Server):
    """gunicorn with several workers; its JSON log goes to a file the test reads."""

    log_path: Path | None = None
    _log: IO[bytes] | None = None

    def start(self) -> None:
        assert self.log_path is not None
        self._log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [str(Path(sys.executable).parent / "gunicorn"), "--config", "gunicorn.conf.py"]
            + ["wsgi:app"],
            env=self.env,
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=self._log,
            start_new_session=True,
        )
        # Ready when every worker has answered: each writes its pid into its access lines.
        deadline = time.monotonic() + 60
        while len(self.pids("/readyz", 200)) < WORKERS:
            assert self.process.poll() is None, self.log_path.read_text()[-3000:]
            assert time.monotonic() < deadline, self.log_path.read_text()[-3000:]
            with ThreadPoolExecutor(WORKERS * 2) as pool:
                list(pool.map(lambda _: self._ready(), range(WORKERS * 4)))
            time.sleep(0.1)

    def _ready(self) -> None:
        try:
            self.request("GET", "/readyz")
        except OSError:
            time.sleep(0.2)

    def access(self, since: int = 0) -> list[dict[str, Any]]:
        """Return the access-log entries written after byte `since` of the log."""
        assert self.log_path is not None
        with self.log_path.open("rb") as log:
            log.seek(since)
            text = log.read().decode(errors="replace")
        entries = []
        for line in text.splitlines():
            if line.startswith("{"):  # gunicorn's own lines are plain text
                entry = json.loads(line)
                if entry.get("event") == "http.request":
                    entries.append(entry)
        return entries

    def pids(self, path: str, status: int, since: int = 0) -> set[int]:
        return {
            int(e["pid"]) for e in self.access(since) if e["path"] == path and e["status"] == status
        }

    def mark(self) -> int:
        """Return the log's current size, to read only what comes after."""
        assert self.log_path is not None
        return self.log_path.stat().st_size

    def stop(self) -> int:
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        code = self.process.wait(timeout=60)
        self.process = None
        return code

    def close(self) -> None:
        if self.process is not None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
            self.process = None
        if self._log is not None:
            self._log.close()

    def ok(self, result: subprocess.CompletedProcess[str]) -> str:
        assert result.returncode == 0, result.stderr
        return result.stdout


@pytest.fixture
def workers(tmp_path: Path, qdrant_url: str) -> Iterator[Workers]:
    stores = servers.server_settings(tmp_path)  # a fresh PostgreSQL schema, an empty Redis
    env = server_env(
        tmp_path,
        DATABASE_URL=stores["DATABASE_URL"],
        RATELIMIT_STORAGE_URI=stores["RATELIMIT_STORAGE_URI"],
        QDRANT_URL=qdrant_url,
        WEB_CONCURRENCY=str(WORKERS),
        LOG_LEVEL="INFO",
        LOG_FORMAT="json",
    )
    running = Workers(local_url(env), env, log_path=tmp_path / "gunicorn.log")
    yield running
    running.close()


def test_one_keys_rate_limit_holds_across_workers(workers: Workers) -> None:
    workers.start()
    key = workers.ok(workers.cli("keys", "create", "--owner", "acme", "--rate-limit", "10/minute"))
    (media,) = workers.ok(workers.cli("seed", "--owner", "acme", "--count", "1")).split()
    path = f"/v1/media/{media}"
    since = workers.mark()

    with ThreadPoolExecutor(max_workers=20) as pool:
        results = list(pool.map(lambda _: workers.request("GET", path, key=key.strip()), range(40)))

    assert Counter(status for status, _, _ in results) == {200: 10, 429: 30}
    for status, payload, headers in results:
        if status == 429:
            assert payload["error"]["code"] == "RATE_LIMIT_EXCEEDED"
            assert 1 <= int(headers["Retry-After"]) <= 60
        else:
            assert payload["data"]["media_id"] == media
    # The requests were spread over several worker processes, sharing one bucket in Redis.
    served = workers.pids(path, 200, since) | workers.pids(path, 429, since)
    assert len(served) >= 2, served
    assert workers.stop() == 0


def test_overlapping_batches_on_several_workers_delete_each_id_exactly_once(
    workers: Workers, qdrant_url: str
) -> None:
    workers.start()
    key = workers.ok(workers.cli("keys", "create", "--owner", "acme")).strip()
    seeded = workers.cli("seed", "--owner", "acme", "--count", "60", "--hd-per-media", "2")
    ids = workers.ok(seeded).split()
    assert len(ids) == 60
    rng = random.Random(11)
    batches = [rng.sample(ids, 25) for _ in range(24)]
    since = workers.mark()

    def send(batch: list[str]) -> dict[str, Any]:
        status, payload, _ = workers.request("DELETE", "/v1/media/batch", {"media_ids": batch}, key)
        assert status == 200, payload
        data: dict[str, Any] = payload["data"]
        return data

    with ThreadPoolExecutor(max_workers=12) as pool:
        results = list(pool.map(send, batches))

    deleted = Counter(m for r in results for m in r["deleted"]["media_ids"])
    covered = {m for batch in batches for m in batch}
    assert set(deleted) == covered
    assert set(deleted.values()) == {1}
    for batch, result in zip(batches, results, strict=True):
        lost = [m for m in batch if m not in result["deleted"]["media_ids"]]
        assert result["failed"]["media_ids"] == lost
        assert set(result["failed"]["reasons"].values()) <= {"NOT_FOUND"}
        assert "cleanup_pending" not in result["deleted"]
    assert sum(r["deleted"]["hd_vectors"] for r in results) == 2 * len(covered)
    assert sum(r["deleted"]["ld_vectors"] for r in results) == len(covered)
    assert len(workers.pids("/v1/media/batch", 200, since)) >= 2

    # The Qdrant server holds the points of the media that are left, and none of the others.
    index = standin_index(qdrant_url)
    try:
        held = {
            space: Counter(p.media_id for page in index.scan(space) for p in page)
            for space in SPACES
        }
    finally:
        index.close()
    kept = set(ids) - covered
    assert held["hd"] == {m: 2 for m in kept}
    assert held["ld"] == {m: 1 for m in kept}
    assert workers.stop() == 0
    check = workers.cli("check")
    assert check.returncode == 0, check.stdout + check.stderr


# A worker's start-up, in rounds: each round waits for its start file, then opens the stores.
OPEN_STORES = """
import json, os, sys, time
from wickson_batch.config import load_settings
from wickson_batch.logs import configure_logging
from wickson_batch.services.stores import Stores
configure_logging("WARNING")  # logs on stderr: stdout carries only "ready"
rounds, go = json.loads(sys.argv[1]), sys.argv[2]
for n, settings in enumerate(rounds):
    print("ready", flush=True)
    while not os.path.exists(f"{go}{n}"):  # then all start together
        time.sleep(0.0005)
    Stores.open(load_settings(settings)).close()
"""


def ready(process: subprocess.Popen[str]) -> bool:
    assert process.stdout is not None
    return process.stdout.readline() == "ready\n"


def standin_index(url: str) -> ServerIndex:
    """Return an index on the stand-in (no background version check to outlive the test)."""
    return ServerIndex(QdrantClient(url=url, check_compatibility=False), {"hd": 8, "ld": 4})


def test_workers_starting_at_once_on_fresh_stores_all_come_up(
    tmp_path: Path, qdrant_url: str
) -> None:
    # Each round: a fresh PostgreSQL schema and no collections, and every process at once.
    rounds = [
        {
            **servers.server_settings(tmp_path / f"round{n}"),
            "QDRANT_URL": qdrant_url,
            "QDRANT_API_KEY": None,
            "HD_DIM": 8,
            "LD_DIM": 4,
        }
        for n in range(ROUNDS)
    ]
    starting = [
        subprocess.Popen(
            [sys.executable, "-c", OPEN_STORES, json.dumps(rounds), str(tmp_path / "go")],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(WORKERS + 1)
    ]
    index = standin_index(qdrant_url)
    try:
        for n in range(ROUNDS):
            if not all(ready(process) for process in starting):
                for process in starting:  # one failed: the others wait for a round to come
                    process.kill()
                break
            for space in SPACES:
                index.client.delete_collection(f"media_{space}")
            (tmp_path / f"go{n}").touch()
        errors = [process.communicate(timeout=60)[1] for process in starting]

        assert [process.returncode for process in starting] == [0] * len(starting), errors
        assert [index.count(space) for space in SPACES] == [0, 0]
        sizes = [index.client.get_collection(f"media_{s}").config.params.vectors for s in SPACES]
        assert [getattr(size, "size", None) for size in sizes] == [8, 4]
    finally:
        index.close()


def lease_of(url: str, job_id: str) -> tuple[str, str | None, int, int | None]:
    """The job's status, lease holder, deleted count and total, read from PostgreSQL."""
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            row = connection.execute(
                text(
                    "SELECT status, lease_holder, deleted, total FROM deletion_jobs WHERE id = :id"
                ),
                {"id": job_id},
            ).one()
    finally:
        engine.dispose()
    return str(row[0]), row[1], int(row[2]), row[3]


def test_killing_the_worker_that_holds_a_jobs_lease_hands_the_job_on(
    tmp_path: Path, qdrant_url: str, pg_redis: servers.ServerUrls
) -> None:
    stores = servers.server_settings(tmp_path)
    env = server_env(
        tmp_path,
        DATABASE_URL=stores["DATABASE_URL"],
        RATELIMIT_STORAGE_URI=stores["RATELIMIT_STORAGE_URI"],
        QDRANT_URL=qdrant_url,
        WEB_CONCURRENCY=str(WORKERS),
        LOG_LEVEL="INFO",
        LOG_FORMAT="json",
        JOB_CHUNK_SIZE="50",
        JOB_MAX_MEDIA_PER_SECOND="400",
        JOB_LEASE_SECONDS="2",
        JOB_POLL_INTERVAL_SECONDS="0.2",
        RECONCILE_INTERVAL_SECONDS="0.5",
        RECONCILE_GRACE_SECONDS="1",
    )
    workers = Workers(local_url(env), env, log_path=tmp_path / "gunicorn.log")
    url = stores["DATABASE_URL"]
    try:
        # Seeded first: a running reconciler (grace 1 s) would take slow seeding for a crash.
        key = workers.ok(workers.cli("keys", "create", "--owner", "acme")).strip()
        ids = workers.ok(workers.cli("seed", "--owner", "acme", "--count", "2000")).split()
        others = workers.ok(workers.cli("seed", "--owner", "other", "--count", "20")).split()
        assert len(ids) == 2000
        workers.start()
        status, payload, _ = workers.request(
            "POST", "/v1/deletion-jobs", {"selection": [{"all": True}]}, key
        )
        assert status == 202, payload
        job_id = payload["data"]["job_id"]
        killed: list[tuple[int, int]] = []  # (pid, deleted at the kill)
        for _ in range(2):
            deadline = time.monotonic() + 30
            while True:  # a live worker holds the lease and has deleted since the last kill
                state, holder, deleted, _ = lease_of(url, job_id)
                dead = {pid for pid, _ in killed}
                if (
                    holder
                    and int(holder.split(":")[1]) not in dead
                    and (not killed or deleted > killed[-1][1])
                    and state == "processing"
                ):
                    break
                assert time.monotonic() < deadline, (state, holder, deleted)
                time.sleep(0.1)
            pid = int(holder.split(":")[1])  # host:pid:nonce
            os.kill(pid, signal.SIGKILL)  # gunicorn starts another in its place
            killed.append((pid, deleted))
            time.sleep(0.3)
        deadline = time.monotonic() + 90
        while lease_of(url, job_id)[0] != "done":
            assert time.monotonic() < deadline, lease_of(url, job_id)
            time.sleep(0.2)
        final = workers.request("GET", f"/v1/deletion-jobs/{job_id}", key=key)[1]["data"]
        assert final["progress"] == {
            "total": 2000,
            "remaining": 0,
            "deleted": 2000,
            "failed": 0,
            "hd_vectors": 2000,
            "ld_vectors": 2000,
        }
        engine = create_engine(url)
        try:
            with engine.connect() as connection:
                reported = connection.execute(
                    text("SELECT media_id, status FROM deletion_job_items WHERE job_id = :id"),
                    {"id": job_id},
                ).all()
                operations = connection.execute(text("SELECT count(*) FROM operations")).one()[0]
                left = {row[0] for row in connection.execute(text("SELECT id FROM media"))}
        finally:
            engine.dispose()
        assert sorted(m for m, _ in reported) == sorted(ids)  # each exactly once
        assert {s for _, s in reported} == {"deleted"}
        assert left == set(others)
        assert operations >= 2000 // 50  # one per chunk (a chunk cut by a kill rolled back)
        # The lease moved on after each kill: each killed worker had claimed the job, and
        # another one claimed it after it.
        logged = [e for e in entries(workers) if e.get("job_id") == job_id]
        claimers = [int(e["pid"]) for e in logged if e.get("event") == "job.claimed"]
        chunk_pids = {int(e["pid"]) for e in logged if e.get("event") == "job.chunk"}
        assert [pid for pid, _ in killed] == claimers[:2] and len(set(claimers)) == 3
        assert claimers[-1] in chunk_pids
        assert workers.stop() == 0
        check = workers.cli("check")
        assert check.returncode == 0, check.stdout + check.stderr
        index = standin_index(qdrant_url)
        try:
            held = {s: {p.media_id for page in index.scan(s) for p in page} for s in SPACES}
        finally:
            index.close()
        assert held["hd"] == held["ld"] == set(others)
        print(f"\nworker kills (pid, deleted): {killed}; claimed by {claimers}")
    finally:
        workers.close()


def entries(workers: Workers) -> list[dict[str, Any]]:
    """Every JSON line of the workers' log."""
    assert workers.log_path is not None
    found = []
    for line in workers.log_path.read_text(errors="replace").splitlines():
        if line.startswith("{"):
            found.append(json.loads(line))
    return found
