"""Benchmark batch deletion over HTTP against the same work done in-process on the raw stores.

Usage: .venv/bin/python bench/harness.py [--sizes 10000,100000] [--million] [--smoke] [--out F]

For each store size it seeds a temporary DATA_DIR with `wickson-batch seed` (growing one
store from the smallest size to the largest), serves it with gunicorn as `make run` does,
and measures:
  - latency p50/p90/p99 of batch deletions of 1, 10 and 100 ids over one keep-alive
    connection (every id a live media of the key's owner);
  - throughput in deleted media per second with 1, 4 and 16 concurrent clients, 100-id batches;
  - server start time (spawn until /readyz answers 200) and resident memory (VmRSS of the
    gunicorn master plus its worker, read from /proc after the load);
  - the floor: with the server stopped, in this process, on the same data, the same
    `DELETE ... RETURNING` statement the service runs in its own transaction, committed
    (SQLite WAL, synchronous=FULL), then one delete-by-id call per collection with the derived
    point ids; and the whole service call `delete_batch()` (both transactions of the
    protocol, no HTTP, no Flask) to show what the protocol adds;
  - the raw floor of DESIGN section 12: what the stores alone need, with none of our
    choices: a plain sqlite3 table (WAL, synchronous=FULL) of the same size, `DELETE FROM t
    WHERE id IN (...)` committed, then per collection one qdrant-edge delete of those points
    and a flush, on shards of the same size and dimensions (no payload); its shards are
    opened once per server session and receive the same deletions in the same order, so
    each timed batch is as warm as its HTTP twin;
  - for comparison, the same with qdrant-client's local mode as the vector store, at the
    sizes it accepts (<= 20k points).
A server session deletes at most a fraction of the store (--budget); after each session the
deleted media are seeded again, so every measurement runs on a store of the stated size. The
floor runs in rounds between the server sessions, so both see the same load of a shared machine.
Prints a table and the target checks, and writes every figure to a JSON file.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import random
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, redirect_stderr
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from wickson_batch.protocol import API_KEY_HEADER, BATCH_PATH

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
OWNER = "bench"
BATCH_SIZES = (1, 10, 100)
LOCAL_MODE_MAX = 20_000  # qdrant-client's local mode warns above this many points
MILLION = 1_000_000

# Targets of DESIGN section 12 (issue 16), each a ratio measured in one run.
RAW_FLOOR_RATIO_MAX = 2.0  # 100-id HTTP p50 / raw floor p50, at 100k media
GROWTH_RATIO_MAX = 1.3
START_AT_MILLION_MAX_S = 5.0
TAIL_RATIO_MAX = 3.0
THROUGHPUT_FALL_MAX = 1.0  # media/s with 1 client / media/s with the most clients
RAW_CHUNK = 1000  # rows and points written per call when the raw store grows


# ---------------------------------------------------------------------------- figures


def percentile(values: Sequence[float], q: float) -> float:
    """Return the q-quantile (0..1) of `values`, interpolating between ranks."""
    ordered = sorted(values)
    if len(ordered) == 1:
        return ordered[0]
    rank = q * (len(ordered) - 1)
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def summary(values: Sequence[float]) -> dict[str, float]:
    """Return n, p50, p90, p99 and max of a list of timings, rounded."""
    return {
        "n": len(values),
        "p50": round(percentile(values, 0.50), 3),
        "p90": round(percentile(values, 0.90), 3),
        "p99": round(percentile(values, 0.99), 3),
        "max": round(max(values), 3),
    }


def cpu_model() -> str:
    """Return the CPU model name from /proc/cpuinfo."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def rss_bytes(pid: int) -> int:
    """Return the VmRSS of a process and all its descendants, from /proc."""
    total = 0
    pending = [pid]
    while pending:
        current = pending.pop()
        try:
            for line in Path(f"/proc/{current}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
            for task in Path(f"/proc/{current}/task").iterdir():
                children = (task / "children").read_text().split()
                pending.extend(int(child) for child in children)
        except (OSError, ValueError):
            continue
    return total


def free_port() -> int:
    """Return a free TCP port on 127.0.0.1."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# ---------------------------------------------------------------------------- the store


@dataclass
class Store:
    """A seeded DATA_DIR, the live ids of the bench owner in it, and an API key."""

    root: Path
    engine: str  # "edge" or "qdrant-local"
    dims: tuple[int, int]
    rng: random.Random
    live: list[str] = field(default_factory=list)
    key: str = ""
    seed_seconds: float = 0.0

    @property
    def env(self) -> dict[str, str]:
        """Return the environment the CLI, the server and this process share."""
        env = {
            **os.environ,
            "DATA_DIR": str(self.root),
            "DATABASE_URL": f"sqlite:///{self.root / 'wickson.db'}",
            "QDRANT_URL": "",
            "HD_DIM": str(self.dims[0]),
            "LD_DIM": str(self.dims[1]),
            "RATE_LIMIT_DEFAULT": "100000000/minute",
            "LOG_LEVEL": "INFO",
            "LOG_FORMAT": "json",
            # 16 clients queue for SQLite's one writer; on a loaded 2-core machine the
            # default 2 s wait for the lock ran out (a 503) and ended the run.
            "DB_LOCK_TIMEOUT_MS": "30000",
        }
        if self.engine == "qdrant-local":
            env["QDRANT_URL"] = f"file://{self.root / 'qdrant-local'}"
        return env

    def settings(self) -> dict[str, Any]:
        """Return the app settings for opening the same stores in this process."""
        env = self.env
        return {
            "DATA_DIR": env["DATA_DIR"],
            "DATABASE_URL": env["DATABASE_URL"],
            "QDRANT_URL": env["QDRANT_URL"] or None,
            "HD_DIM": self.dims[0],
            "LD_DIM": self.dims[1],
        }

    def cli(self, *args: str) -> str:
        """Run `wickson-batch` on this store and return its stdout."""
        done = subprocess.run(
            [str(BIN / "wickson-batch"), *args],
            env=self.env,
            capture_output=True,
            text=True,
        )
        if done.returncode != 0:
            raise RuntimeError(f"wickson-batch {' '.join(args)} failed: {done.stderr[-2000:]}")
        return done.stdout

    def grow_to(self, size: int) -> None:
        """Seed live media of the bench owner until the store holds `size` of them."""
        missing = size - len(self.live)
        if missing <= 0:
            return
        started = time.perf_counter()
        ids = self.cli("seed", "--owner", OWNER, "--count", str(missing)).split()
        self.seed_seconds += time.perf_counter() - started
        assert len(ids) == missing, (len(ids), missing)
        self.live.extend(ids)
        self.rng.shuffle(self.live)
        if not self.key:
            self.key = self.cli("keys", "create", "--owner", OWNER).strip()

    def take(self, count: int) -> list[str]:
        """Remove and return `count` random live ids (the caller is about to delete them)."""
        assert count <= len(self.live), "the session budget let the store run dry"
        taken = self.live[-count:]
        del self.live[-count:]
        return taken


# ---------------------------------------------------------------------------- the server


@dataclass
class Server:
    """A running gunicorn serving one store."""

    process: subprocess.Popen[bytes]
    port: int
    start_seconds: float

    def connection(self) -> http.client.HTTPConnection:
        """Return a new keep-alive connection."""
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=120)


@contextmanager
def serving(store: Store, log_path: Path) -> Iterator[Server]:
    """Start gunicorn on the store, wait for /readyz, and stop it afterwards."""
    port = free_port()
    env = {**store.env, "HOST": "127.0.0.1", "PORT": str(port)}
    log = log_path.open("ab")
    started = time.perf_counter()
    process = subprocess.Popen(
        [str(BIN / "gunicorn"), "--config", "gunicorn.conf.py", "wsgi:app"],
        env=env,
        cwd=ROOT,
        stdout=log,
        stderr=log,
    )
    try:
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"gunicorn exited with {process.returncode}; see {log_path}")
            if time.perf_counter() - started > 600:
                raise RuntimeError(f"gunicorn not ready after 600 s; see {log_path}")
            try:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
                conn.request("GET", "/readyz")
                response = conn.getresponse()
                response.read()
                conn.close()
                if response.status == 200:
                    break
            except OSError:
                pass
            time.sleep(0.02)
        yield Server(process, port, time.perf_counter() - started)
    finally:
        process.terminate()
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


def delete_over_http(conn: http.client.HTTPConnection, key: str, ids: list[str]) -> None:
    """Send one batch deletion and check every id was deleted."""
    body = json.dumps({"media_ids": ids, "reason": "bench"})
    headers = {"Content-Type": "application/json", API_KEY_HEADER: key}
    conn.request("DELETE", BATCH_PATH, body=body, headers=headers)
    response = conn.getresponse()
    data = json.loads(response.read())
    if response.status != 200 or data["data"]["deleted"]["count"] != len(ids):
        raise RuntimeError(f"batch deletion answered {response.status}: {str(data)[:500]}")


# ---------------------------------------------------------------------------- sessions


@dataclass(frozen=True)
class Job:
    """Part of a measurement: `batches` deletions of `size` ids by `clients` clients."""

    kind: str  # "latency" or "throughput"
    size: int
    batches: int
    clients: int = 1


def plan_sessions(jobs: Sequence[Job], budget: int) -> list[list[Job]]:
    """Pack jobs into server sessions that each delete at most `budget` ids."""
    sessions: list[list[Job]] = [[]]
    room = budget
    for job in jobs:
        left = job.batches
        while left:
            fit = min(left, room // job.size)
            if fit == 0 or (job.kind == "throughput" and fit < min(left, job.clients)):
                sessions.append([])
                room = budget
                continue
            sessions[-1].append(Job(job.kind, job.size, fit, job.clients))
            room -= fit * job.size
            left -= fit
    return [session for session in sessions if session]


@dataclass
class HttpFigures:
    """What the server sessions of one store size measured."""

    latency: dict[int, list[float]] = field(default_factory=dict)
    deleted: dict[int, int] = field(default_factory=dict)  # per client count
    wall: dict[int, float] = field(default_factory=dict)
    starts: list[float] = field(default_factory=list)
    rss: list[int] = field(default_factory=list)


def run_latency(server: Server, store: Store, job: Job, into: dict[int, list[float]]) -> None:
    """Time `job.batches` deletions of `job.size` ids, one at a time, on one connection."""
    conn = server.connection()
    timings = into.setdefault(job.size, [])
    for _ in range(job.batches):
        ids = store.take(job.size)
        started = time.perf_counter()
        delete_over_http(conn, store.key, ids)
        timings.append((time.perf_counter() - started) * 1000)
    conn.close()


def run_throughput(server: Server, store: Store, job: Job) -> tuple[int, float]:
    """Delete `job.batches` batches with `job.clients` clients at once; return ids, seconds."""
    batches = [store.take(job.size) for _ in range(job.batches)]
    lock = threading.Lock()
    errors: list[BaseException] = []
    connections = [server.connection() for _ in range(job.clients)]
    for conn in connections:  # connect (and warm the worker thread) before the clock starts
        conn.request("GET", "/healthz")
        conn.getresponse().read()
    gate = threading.Barrier(job.clients + 1)

    def client(conn: http.client.HTTPConnection) -> None:
        gate.wait()
        while True:
            with lock:
                if not batches or errors:
                    return
                ids = batches.pop()
            try:
                delete_over_http(conn, store.key, ids)
            except BaseException as error:  # reported after the join
                errors.append(error)
                return

    threads = [threading.Thread(target=client, args=(conn,)) for conn in connections]
    for thread in threads:
        thread.start()
    gate.wait()
    started = time.perf_counter()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - started
    for conn in connections:
        conn.close()
    if errors:
        raise errors[0]
    return job.batches * job.size, wall


def run_session(store: Store, session: Sequence[Job], log_path: Path, into: HttpFigures) -> None:
    """Start a server on the store, run the jobs against it, and stop it."""
    with serving(store, log_path) as server:
        into.starts.append(server.start_seconds)
        warm = server.connection()  # the first request pays for lazy imports and caches
        delete_over_http(warm, store.key, store.take(1))
        warm.close()
        for job in session:
            if job.kind == "latency":
                run_latency(server, store, job, into.latency)
            else:
                deleted, wall = run_throughput(server, store, job)
                into.deleted[job.clients] = into.deleted.get(job.clients, 0) + deleted
                into.wall[job.clients] = into.wall.get(job.clients, 0.0) + wall
        into.rss.append(rss_bytes(server.process.pid))


# ---------------------------------------------------------------------------- the floor


@dataclass
class FloorFigures:
    """In-process timings (ms) per batch size: raw stores, and the whole service call."""

    total: dict[int, list[float]] = field(default_factory=dict)
    sql: dict[int, list[float]] = field(default_factory=dict)
    vectors: dict[int, list[float]] = field(default_factory=dict)
    service: dict[int, list[float]] = field(default_factory=dict)


def measure_floor(store: Store, samples: dict[int, int], service_samples: int) -> FloorFigures:
    """Time the raw SQL delete and point deletions, then `delete_batch`, in this process."""
    from sqlalchemy import delete

    from wickson_batch.config import load_settings
    from wickson_batch.logs import configure_logging
    from wickson_batch.models import Media, MediaState
    from wickson_batch.services.deletion import delete_batch
    from wickson_batch.services.stores import Stores
    from wickson_batch.vectors.base import SPACES, point_ids_for

    figures = FloorFigures()
    configure_logging("INFO", "json")  # as the server logs: JSON lines, here into a file
    held = Stores.open(load_settings(store.settings()))
    log_path = store.root.parent / f"floor-{store.engine}.log"
    try:
        with log_path.open("a") as log, redirect_stderr(log):
            # Warm up both stores and the statement cache, as the server's first request does.
            delete_batch(held.db, held.vectors, owner=OWNER, media_ids=store.take(1))
            for size, count in samples.items():
                for _ in range(count):
                    ids = store.take(size)
                    started = time.perf_counter()
                    # The statement of step 1 of the protocol, alone in its transaction.
                    statement = (
                        delete(Media)
                        .where(
                            Media.id.in_(ids), Media.owner == OWNER, Media.state == MediaState.LIVE
                        )
                        .returning(Media.id, Media.hd_count, Media.ld_count)
                        .execution_options(synchronize_session=False)
                    )
                    with held.db.unit_of_work() as uow:
                        rows = uow.session.execute(statement).all()
                        uow.commit()
                    after_sql = time.perf_counter()
                    assert len(rows) == size, (len(rows), size)
                    # Step 2: one delete-by-id call per collection with the derived point ids.
                    for space in SPACES:
                        points = [
                            pid
                            for row in rows
                            for pid in point_ids_for(
                                row.id, space, row.hd_count if space == "hd" else row.ld_count
                            )
                        ]
                        held.vectors.delete(space, points)
                    done = time.perf_counter()
                    figures.total.setdefault(size, []).append((done - started) * 1000)
                    figures.sql.setdefault(size, []).append((after_sql - started) * 1000)
                    figures.vectors.setdefault(size, []).append((done - after_sql) * 1000)
            for _ in range(service_samples):
                ids = store.take(100)
                started = time.perf_counter()
                outcome = delete_batch(held.db, held.vectors, owner=OWNER, media_ids=ids)
                figures.service.setdefault(100, []).append((time.perf_counter() - started) * 1000)
                assert len(outcome.deleted) == 100 and not outcome.cleanup_pending
    finally:
        held.close()
    return figures


# ---------------------------------------------------------------------------- the raw floor


@dataclass
class RawFigures:
    """Raw-floor timings (ms) per batch size: plain sqlite3, then qdrant-edge delete + flush."""

    total: dict[int, list[float]] = field(default_factory=dict)
    sql: dict[int, list[float]] = field(default_factory=dict)
    vectors: dict[int, list[float]] = field(default_factory=dict)


@dataclass
class RawStore:
    """What the stores alone need (DESIGN section 12), with none of the service's choices.

    A plain sqlite3 table `t` (WAL, synchronous=FULL, id as primary key, no other index) and
    two qdrant-edge shards of the same dimensions holding one point per media each, without
    payload or payload index, grown to the same size as the service's store.
    """

    root: Path
    dims: tuple[int, int]
    seed: int
    live: list[str] = field(default_factory=list)
    points: dict[str, tuple[Any, Any]] = field(default_factory=dict)  # media -> (hd, ld) ids
    _made: int = 0

    def _connect(self) -> Any:
        import sqlite3

        conn = sqlite3.connect(self.root / "raw.db", isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        return conn

    def _config(self, dim: int) -> Any:
        from qdrant_edge import Distance, EdgeConfig, EdgeVectorParams, Memory

        # Cold (mmap) like the service's shards, only so that 1M media fit in RAM twice over;
        # deleting never reads a vector.
        params = EdgeVectorParams(size=dim, distance=Distance.Cosine, memory=Memory.Cold)
        return EdgeConfig(vectors=params)

    def _open_shards(self) -> list[Any]:
        from qdrant_edge import EdgeShard

        shards = []
        for space, dim in zip(("hd", "ld"), self.dims, strict=True):
            path = self.root / space
            config = self._config(dim)
            if path.is_dir() and any(path.iterdir()):
                shards.append(EdgeShard.load(str(path), config))
            else:
                path.mkdir(parents=True, exist_ok=True)
                shards.append(EdgeShard.create(str(path), config))
        return shards

    def _grow(self, conn: Any, shards: list[Any], size: int) -> None:
        import uuid

        import numpy as np
        from qdrant_edge import Point, UpdateOperation

        rng = np.random.default_rng(self.seed + self._made)
        while len(self.live) < size:
            count = min(RAW_CHUNK, size - len(self.live))
            ids = [f"vec-{uuid.uuid4().hex}" for _ in range(count)]
            conn.execute("BEGIN")
            conn.executemany(
                "INSERT INTO t (id, hd_count, ld_count) VALUES (?, 1, 1)", [(m,) for m in ids]
            )
            conn.execute("COMMIT")
            pids = [(uuid.uuid4(), uuid.uuid4()) for _ in ids]
            for n, (shard, dim) in enumerate(zip(shards, self.dims, strict=True)):
                matrix = rng.random((count, dim), dtype=np.float32)
                batch = [Point(p[n], row.tolist(), {}) for p, row in zip(pids, matrix, strict=True)]
                shard.update(UpdateOperation.upsert_points(batch))
            self.points.update(zip(ids, pids, strict=True))
            self.live.extend(ids)
            self._made += count
        random.Random(self.seed + self._made).shuffle(self.live)

    @contextmanager
    def opened(self, size: int) -> Iterator[tuple[Any, list[Any]]]:
        """Open both stores, yield them, then top them up to `size` and close the shards."""
        self.root.mkdir(parents=True, exist_ok=True)
        conn = self._connect()
        conn.execute(
            "CREATE TABLE IF NOT EXISTS t (id TEXT PRIMARY KEY, hd_count INTEGER, ld_count INTEGER)"
        )
        shards = self._open_shards()
        try:
            yield conn, shards
            self._grow(conn, shards, size)
        finally:
            for shard in shards:
                shard.flush()
                shard.close()
            conn.close()

    def grow_to(self, size: int) -> None:
        """Bring the raw store to `size` media (and points), flushed and closed."""
        with self.opened(size):
            pass

    def delete(self, conn: Any, shards: list[Any], ids: list[str]) -> tuple[float, float]:
        """The raw floor of one batch: SQL delete committed, then per shard delete + flush."""
        from qdrant_edge import UpdateOperation

        started = time.perf_counter()
        conn.execute("BEGIN")
        conn.execute(f"DELETE FROM t WHERE id IN ({','.join('?' * len(ids))})", ids)
        conn.execute("COMMIT")
        after_sql = time.perf_counter()
        for n, shard in enumerate(shards):
            shard.update(UpdateOperation.delete_points([self.points[m][n] for m in ids]))
            shard.flush()
        done = time.perf_counter()
        for m in ids:
            del self.points[m]
        return (after_sql - started) * 1000, (done - after_sql) * 1000

    def take(self, count: int) -> list[str]:
        """Remove and return `count` live ids (the caller is about to delete them)."""
        taken = self.live[-count:]
        del self.live[-count:]
        return taken


def measure_raw(raw: RawStore, size: int, session: Sequence[Job], into: RawFigures) -> None:
    """Delete on the raw stores exactly as one server session deletes, timing its latency jobs.

    The shards are opened once, like the server's, and receive the same deletions in the same
    order (the warm-up batch of 1, then every job, throughput batches untimed), so each timed
    batch follows as many prior deletions since the open as its HTTP twin: warm, never
    right after a reopen.
    """
    with raw.opened(size) as (conn, shards):
        raw.delete(conn, shards, raw.take(1))
        for job in session:
            for _ in range(job.batches):
                sql, vec = raw.delete(conn, shards, raw.take(job.size))
                if job.kind == "latency":
                    into.sql.setdefault(job.size, []).append(sql)
                    into.vectors.setdefault(job.size, []).append(vec)
                    into.total.setdefault(job.size, []).append(sql + vec)


# ---------------------------------------------------------------------------- one size


def progress(message: str, since: float) -> None:
    """Say on stderr how far the run is."""
    print(f"   {time.perf_counter() - since:7.1f} s  {message}", file=sys.stderr, flush=True)


@dataclass
class Options:
    """What to run."""

    sizes: list[int]
    dims: tuple[int, int]
    samples: int
    throughput_batches: int
    clients: list[int]
    budget: float
    local_sizes: list[int]
    local_samples: int
    out: Path
    smoke: bool


def jobs_for(options: Options) -> list[Job]:
    """Return the HTTP jobs of one store size."""
    jobs = [Job("latency", size, options.samples) for size in BATCH_SIZES]
    jobs += [Job("throughput", 100, options.throughput_batches, c) for c in options.clients]
    return jobs


def measure_size(
    store: Store, size: int, options: Options, work: Path, raw: RawStore | None = None
) -> dict[str, Any]:
    """Bring the stores to `size`, then measure the floors and the server; return the figures."""
    clock = time.perf_counter()
    store.grow_to(size)
    progress(f"{store.engine} at {size:,}: seeded ({store.seed_seconds:.1f} s so far)", clock)
    if raw is not None:
        raw.grow_to(size)
        progress(f"raw store at {size:,}: seeded", clock)
    budget = max(100, int(size * options.budget))
    engine_jobs = jobs_for(options)
    if store.engine == "qdrant-local":  # far slower: latency only, fewer samples
        engine_jobs = [job for job in engine_jobs if job.kind == "latency"]
    sessions = plan_sessions(engine_jobs, budget)
    # The floor runs in rounds interleaved with the server sessions, so that both see the
    # same machine load (it is shared); the store is topped up after each round and session.
    floor_ids = options.samples * (sum(BATCH_SIZES) + 100) + 1
    rounds = max(len(sessions), -(-floor_ids // budget))
    per_round = -(-options.samples // rounds)
    left = options.samples
    floor, http, raw_floor = FloorFigures(), HttpFigures(), RawFigures()
    log_path = work / f"gunicorn-{store.engine}.log"
    for index in range(rounds):
        if left > 0:
            count = min(per_round, left)
            part = measure_floor(store, {s: count for s in BATCH_SIZES}, count)
            for name in ("total", "sql", "vectors", "service"):
                for key, values in getattr(part, name).items():
                    getattr(floor, name).setdefault(key, []).extend(values)
            left -= count
            store.grow_to(size)
        if index < len(sessions):
            if raw is not None:  # same deletions, same order, same load as the session's
                measure_raw(raw, size, sessions[index], raw_floor)
            run_session(store, sessions[index], log_path, http)
            store.grow_to(size)
    progress(f"{store.engine} at {size:,}: {len(sessions)} server sessions, floor measured", clock)
    result: dict[str, Any] = {
        "size": size,
        "engine": store.engine,
        "seed_seconds_total": round(store.seed_seconds, 2),
        "server_sessions": len(http.starts),
        "start_seconds": {
            "median": round(statistics.median(http.starts), 3),
            "max": round(max(http.starts), 3),
            "all": [round(s, 3) for s in http.starts],
        },
        "rss_mib": round(max(http.rss) / 2**20, 1),
        "latency_ms": {str(s): summary(v) for s, v in sorted(http.latency.items())},
        "throughput": {
            str(c): {
                "media_per_s": round(http.deleted[c] / http.wall[c], 1),
                "deleted": http.deleted[c],
                "seconds": round(http.wall[c], 3),
            }
            for c in sorted(http.deleted)
        },
        "floor_ms": {
            str(s): {
                "total": summary(floor.total[s]),
                "sql": summary(floor.sql[s]),
                "vectors": summary(floor.vectors[s]),
            }
            for s in sorted(floor.total)
        },
        "service_ms": {str(s): summary(v) for s, v in floor.service.items()},
    }
    result["ratio_http_to_floor_p50"] = {
        s: round(result["latency_ms"][s]["p50"] / result["floor_ms"][s]["total"]["p50"], 2)
        for s in result["latency_ms"]
    }
    if raw_floor.total:
        result["raw_floor_ms"] = {
            str(s): {
                "total": summary(raw_floor.total[s]),
                "sql": summary(raw_floor.sql[s]),
                "vectors": summary(raw_floor.vectors[s]),
            }
            for s in sorted(raw_floor.total)
        }
        result["ratio_http_to_raw_floor_p50"] = {
            s: round(result["latency_ms"][s]["p50"] / result["raw_floor_ms"][s]["total"]["p50"], 2)
            for s in result["latency_ms"]
        }
    return result


# ---------------------------------------------------------------------------- report


def check(name: str, value: float | None, limit: float, detail: str) -> dict[str, Any]:
    """Return one target check."""
    if value is None:
        return {
            "target": name,
            "ratio": None,
            "limit": limit,
            "status": "not run",
            "detail": detail,
        }
    status = "pass" if value <= limit else "miss"
    return {
        "target": name,
        "ratio": round(value, 2),
        "limit": limit,
        "status": status,
        "detail": detail,
    }


def targets(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Evaluate the targets of DESIGN section 12 on the embedded engine's results."""
    edge = [r for r in results if r["engine"] == "edge"]
    checks = []
    for r in edge:
        ratio = r["ratio_http_to_raw_floor_p50"]["100"]
        checks.append(
            check(
                f"100-id HTTP p50 / raw floor p50 at {r['size']:,}",
                ratio,
                RAW_FLOOR_RATIO_MAX,
                f"{r['latency_ms']['100']['p50']} ms"
                f" / {r['raw_floor_ms']['100']['total']['p50']} ms",
            )
        )
    smallest, largest = edge[0], edge[-1]
    if len(edge) > 1:
        a, b = largest["latency_ms"]["100"]["p50"], smallest["latency_ms"]["100"]["p50"]
        checks.append(
            check(
                f"100-id p50 at {largest['size']:,} / at {smallest['size']:,}",
                a / b,
                GROWTH_RATIO_MAX,
                f"{a} ms / {b} ms",
            )
        )
    else:
        checks.append(check("100-id p50 growth with the store", None, GROWTH_RATIO_MAX, "one size"))
    at_million = [r for r in edge if r["size"] >= MILLION]
    if at_million:
        start = at_million[0]["start_seconds"]["median"]
        checks.append(
            check(
                "start-up at 1M / 5 s",
                start / START_AT_MILLION_MAX_S,
                1.0,
                f"{start} s (median of {at_million[0]['server_sessions']} starts)",
            )
        )
    else:
        checks.append(check("start-up at 1M / 5 s", None, 1.0, "1M not run (--million)"))
    for r in edge:
        lat = r["latency_ms"]["100"]
        checks.append(
            check(
                f"100-id p99 / p50 at {r['size']:,}",
                lat["p99"] / lat["p50"],
                TAIL_RATIO_MAX,
                f"{lat['p99']} ms / {lat['p50']} ms",
            )
        )
    for r in edge:
        tput = r["throughput"]
        if len(tput) < 2:
            continue
        fewest, most = min(tput, key=int), max(tput, key=int)
        one, many = tput[fewest]["media_per_s"], tput[most]["media_per_s"]
        checks.append(
            check(
                f"media/s with {fewest} client(s) / with {most} at {r['size']:,}",
                one / many,
                THROUGHPUT_FALL_MAX,
                f"{one:,.0f} / {many:,.0f} media/s",
            )
        )
    return checks


def table(results: list[dict[str, Any]]) -> str:
    """Return the results as a plain-text table."""
    lines = [
        "engine          media batch | HTTP p50    p90    p99 | raw floor p50 (sql + vec) | ratio"
        " | protocol floor p50 (sql + vec) | ratio | service p50",
    ]
    for r in results:
        for s in ("1", "10", "100"):
            lat, floor = r["latency_ms"][s], r["floor_ms"][s]
            service = r["service_ms"].get(s)
            service_p50 = f"{service['p50']:.1f}" if service else "-"
            raw = r.get("raw_floor_ms", {}).get(s)
            raw_text, raw_ratio = f"{'-':>25}", "    -"
            if raw is not None:
                raw_text = (
                    f"{raw['total']['p50']:>13.1f} ({raw['sql']['p50']:>4.1f}"
                    f" + {raw['vectors']['p50']:>4.1f})"
                )
                raw_ratio = f"{r['ratio_http_to_raw_floor_p50'][s]:>4.2f}x"
            lines.append(
                f"{r['engine']:<12} {r['size']:>9,} {s:>5} | {lat['p50']:>8.1f} {lat['p90']:>6.1f}"
                f" {lat['p99']:>6.1f} | {raw_text} | {raw_ratio}"
                f" | {floor['total']['p50']:>18.1f} ({floor['sql']['p50']:>4.1f}"
                f" + {floor['vectors']['p50']:>4.1f}) | {r['ratio_http_to_floor_p50'][s]:>4.2f}x"
                f" | {service_p50:>6}"
            )
    lines += [
        "",
        "engine          media | media/s deleted (clients)      | start s med/max | RSS MiB",
    ]
    for r in results:
        tput = "  ".join(f"{v['media_per_s']:,.0f} ({c})" for c, v in r["throughput"].items())
        start = r["start_seconds"]
        lines.append(
            f"{r['engine']:<12} {r['size']:>9,} | {tput or '-':<30} |"
            f" {start['median']:>6.2f} / {start['max']:<6.2f} | {r['rss_mib']:>7.1f}"
        )
    return "\n".join(lines)


def checks_text(checks: list[dict[str, Any]]) -> str:
    """Return the target checks, one a line."""
    lines = []
    for c in checks:
        ratio = "-" if c["ratio"] is None else f"{c['ratio']:.2f}"
        lines.append(
            f"  [{c['status']:^7}] {c['target']}: {ratio} (limit {c['limit']}) {c['detail']}"
        )
    return "\n".join(lines)


# ---------------------------------------------------------------------------- main


def parse(argv: Sequence[str] | None = None) -> Options:
    """Read the options from flags, falling back to BENCH_* environment variables."""
    env = os.environ
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default=env.get("SIZES") or "10000,100000")
    parser.add_argument("--million", action="store_true", help="add a store of 1M media")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, small vectors, fast")
    parser.add_argument("--samples", type=int, default=None, help="latency samples per size")
    parser.add_argument("--throughput-batches", type=int, default=None)
    parser.add_argument("--clients", default="1,4,16")
    parser.add_argument("--dims", default="1024,128", help="HD_DIM,LD_DIM")
    parser.add_argument("--budget", type=float, default=0.25, help="share deleted per session")
    parser.add_argument(
        "--local-sizes",
        default=None,
        help="sizes for qdrant-client's local mode (default: the sizes <= 20k; 'none' to skip)",
    )
    parser.add_argument("--local-samples", type=int, default=20, help="its latency samples")
    parser.add_argument("--out", default=env.get("BENCH_OUT"), help="JSON file to write")
    args = parser.parse_args(argv)
    sizes = sorted({int(s) for s in str(args.sizes).replace("_", "").split(",") if s})
    dims = tuple(int(d) for d in args.dims.split(","))
    samples, throughput_batches, clients = 100, 64, [int(c) for c in args.clients.split(",")]
    budget, local_samples = args.budget, args.local_samples
    if args.local_sizes is None:
        local_sizes = [s for s in sizes if s <= LOCAL_MODE_MAX]
    elif args.local_sizes == "none":
        local_sizes = []
    else:
        local_sizes = sorted({int(s) for s in args.local_sizes.split(",")})
    if args.smoke:  # every code path once, small: a CI check that the harness still runs
        sizes, dims, samples, throughput_batches, clients = [1500], (64, 16), 4, 4, [1, 2]
        budget, local_sizes, local_samples = 0.9, [300], 1
    if args.million and MILLION not in sizes:
        sizes.append(MILLION)
    if any(s > LOCAL_MODE_MAX for s in local_sizes):
        parser.error(f"qdrant-client's local mode is measured only up to {LOCAL_MODE_MAX} media")
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    out = Path(args.out) if args.out else ROOT / "bench" / "results" / f"{stamp}.json"
    return Options(
        sizes=sizes,
        dims=(dims[0], dims[1]),
        samples=args.samples or samples,
        throughput_batches=args.throughput_batches or throughput_batches,
        clients=clients,
        budget=budget,
        local_sizes=local_sizes,
        local_samples=local_samples,
        out=out,
        smoke=args.smoke,
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; exit 0 even when a target is missed (the report says so)."""
    options = parse(argv)
    began = time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix="wickson-bench-"))
    results: list[dict[str, Any]] = []
    try:
        edge = Store(work / "edge", "edge", options.dims, random.Random(4))
        raw = RawStore(work / "raw", options.dims, seed=6)
        for size in options.sizes:
            print(f"== edge, {size:,} media", file=sys.stderr, flush=True)
            results.append(measure_size(edge, size, options, work, raw))
        if options.local_sizes:
            local = Store(work / "local", "qdrant-local", options.dims, random.Random(5))
            local_options = Options(**{**options.__dict__, "samples": options.local_samples})
            for size in options.local_sizes:
                print(f"== qdrant-local, {size:,} media", file=sys.stderr, flush=True)
                results.append(measure_size(local, size, local_options, work))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    checks = targets(results)
    report = {
        "finished_at": datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
        "seconds": round(time.perf_counter() - began, 1),
        "machine": {
            "cpu": cpu_model(),
            "cores": os.cpu_count(),
            "load_average": [round(x, 2) for x in os.getloadavg()],
            "python": platform.python_version(),
        },
        "options": {
            "sizes": options.sizes,
            "dims": list(options.dims),
            "samples": options.samples,
            "throughput_batches": options.throughput_batches,
            "clients": options.clients,
            "budget": options.budget,
            "local_sizes": options.local_sizes,
            "local_samples": options.local_samples,
            "smoke": options.smoke,
        },
        "results": results,
        "targets": checks,
    }
    options.out.parent.mkdir(parents=True, exist_ok=True)
    options.out.write_text(json.dumps(report, indent=2) + "\n")
    print(table(results))
    print("\ntargets (ratios measured in this run):")
    print(checks_text(checks))
    print(f"\nwrote {options.out}  ({report['seconds']} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
