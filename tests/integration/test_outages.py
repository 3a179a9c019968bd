"""The fault suite: the backing servers fail under load, and every answer is what it must be.

DESIGN.md section 13. Each test runs a real gunicorn (tests/live_server.py) while threads
send batches and reads and poll `/healthz` or `/readyz`; every answer is recorded with the
phase of the outage it fell in, and the test asserts the exact outcome: no 500, no answer
slower than the configured timeouts plus a margin, every 503 with `Retry-After`, every
acknowledged deletion gone from SQL and from both vector collections, every refused one
intact (or, when its deciding commit was cut off, wholly applied), `wickson-batch check`
consistent, no thread left stuck.

- Redis (the rate limits' storage) frozen, then stopped and started again: the test's own
  redis-server. The same in both passes, so it runs in the first one only.
- PostgreSQL stopped and started again, fast and immediate (crash) shutdown: the test's own
  PostgreSQL (initdb into a temporary folder), run with `synchronous_commit = off`; the
  shared test server is never stopped. The first pass only, wherever PostgreSQL is installed.
- A lock held on the media table past `DB_LOCK_TIMEOUT_MS`: an open write transaction on
  SQLite in the first pass, `LOCK TABLE media IN ACCESS EXCLUSIVE MODE` on PostgreSQL in the
  server pass (WICKSON_TEST_BACKEND=server).
- PostgreSQL only, in the server pass, through Flask's test client: the deciding transaction
  commits synchronously whatever the database's default, and start-up warns about fsync off.

Each test prints its figures (`pytest -s`): answers per phase and status, the slowest, and
how long the outage and the recovery took.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import tempfile
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import redis
from flask import Flask
from sqlalchemy import create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session
from structlog.testing import capture_logs

from tests import servers
from tests.helpers import Caller, settings_for, stores_of
from tests.live_server import Server, free_port, local_url, server_env
from wickson_batch import create_app
from wickson_batch.api.errors import UNAVAILABLE_RETRY_AFTER_SECONDS
from wickson_batch.config import load_settings
from wickson_batch.protocol import RETRY_AFTER_HEADER, SCOPES
from wickson_batch.services import keys
from wickson_batch.services.seeding import seed_media
from wickson_batch.services.stores import Stores
from wickson_batch.vectors.base import SPACES

pytestmark = pytest.mark.slow

RETRY_AFTER = str(UNAVAILABLE_RETRY_AFTER_SECONDS)
JOIN_SECONDS = 30  # a load thread still running this long after the stop is stuck

postgres_only = pytest.mark.skipif(
    not servers.SERVER_PASS, reason="PostgreSQL-only behaviour: runs in the server pass"
)


def missing_server(reason: str) -> None:
    """Skip the test for want of a server binary, or fail it under CI=true."""
    if servers.in_ci():
        pytest.fail(f"{reason} (CI=true: a missing server is a failure)", pytrace=False)
    pytest.skip(reason)


# --- Every answer, recorded -------------------------------------------------------------


@dataclass(frozen=True)
class Answer:
    kind: str  # batch, read, healthz, readyz, tiny
    phase: str
    status: int  # 0: no HTTP answer (the error is in `error`)
    retry_after: str | None
    seconds: float
    sent: float  # time.monotonic() when it was sent
    ids: tuple[str, ...] = ()
    deleted: tuple[str, ...] = ()
    body: dict[str, Any] = field(default_factory=dict, compare=False)
    error: str = ""


class Recorder:
    """The answers the load threads got, each with the phase of the outage it fell in."""

    def __init__(self, server: Server, key: str) -> None:
        self.server, self.key = server, key
        self.lock = threading.Lock()
        self.phase = "up"
        self.answers: list[Answer] = []
        self.stop = threading.Event()
        self.threads: list[threading.Thread] = []

    def set_phase(self, phase: str) -> float:
        with self.lock:
            self.phase = phase
        return time.monotonic()

    def call(
        self,
        kind: str,
        method: str,
        path: str,
        payload: object = None,
        key: str | None = None,
        ids: tuple[str, ...] = (),
    ) -> Answer:
        with self.lock:
            phase = self.phase
        sent = time.monotonic()
        try:
            status, body, headers = self.server.request(method, path, payload, key)
            error = ""
        except Exception as failure:  # refused, reset, timed out: recorded, asserted absent
            status, body, headers, error = 0, {}, {}, f"{type(failure).__name__}: {failure}"
        deleted: tuple[str, ...] = ()
        if kind == "batch" and status == 200:
            deleted = tuple(body["data"]["deleted"]["media_ids"])
        answer = Answer(
            kind,
            phase,
            status,
            headers.get(RETRY_AFTER_HEADER),
            time.monotonic() - sent,
            sent,
            ids,
            deleted,
            body,
            error,
        )
        with self.lock:
            self.answers.append(answer)
        return answer

    # The load: each runs in a thread of its own until `stop`.

    def batches(self, ids: list[str], size: int, pause: float, after_refusal: float) -> None:
        """Send batches of `size` of `ids`, each id once, until they run out or `stop`;
        wait `pause` after each answer, `after_refusal` after one that is not a 200."""
        for start in range(0, len(ids), size):
            if self.stop.is_set():
                return
            batch = tuple(ids[start : start + size])
            answer = self.call(
                "batch", "POST", "/v1/media/batch/delete", {"media_ids": list(batch)},
                self.key, batch,
            )  # fmt: skip
            time.sleep(pause if answer.status == 200 else after_refusal)

    def reads(self, ids: list[str], pause: float) -> None:
        n = 0
        while not self.stop.is_set():
            media_id = ids[n % len(ids)]
            self.call("read", "GET", f"/v1/media/{media_id}", key=self.key, ids=(media_id,))
            n += 1
            time.sleep(pause)

    def probe(self, kind: str, pause: float) -> None:
        while not self.stop.is_set():
            self.call(kind, "GET", f"/{kind}")
            time.sleep(pause)

    def start(self, *targets: tuple[Callable[..., None], tuple[Any, ...]]) -> None:
        for target, args in targets:
            thread = threading.Thread(target=target, args=args, daemon=True)
            self.threads.append(thread)
            thread.start()

    def finish(self) -> None:
        """Stop the load; every thread must end promptly."""
        self.stop.set()
        for thread in self.threads:
            thread.join(JOIN_SECONDS)
        stuck = [thread.name for thread in self.threads if thread.is_alive()]
        assert not stuck, f"load threads left stuck: {stuck}"

    # What they saw.

    def of(self, *kinds: str, phase: str | None = None) -> list[Answer]:
        with self.lock:
            return [
                answer
                for answer in self.answers
                if (not kinds or answer.kind in kinds) and (phase is None or answer.phase == phase)
            ]

    def acknowledged(self) -> set[str]:
        return {media_id for answer in self.of("batch") for media_id in answer.deleted}

    def refused(self) -> set[str]:
        return {
            media_id
            for answer in self.of("batch")
            if answer.status != 200
            for media_id in answer.ids
        }

    def in_doubt(self) -> set[str]:
        """The ids of batches refused after their deciding commit was sent: the connection
        was lost and the decision could not be re-read (503 naming the operation)."""
        return {
            media_id
            for answer in self.of("batch")
            if answer.status == 503 and "operation_id" in answer.body["error"].get("details", {})
            for media_id in answer.ids
        }

    def counts(self) -> dict[str, dict[str, int]]:
        """Answers per phase, as `kind status` -> how many."""
        table: dict[str, Counter[str]] = {}
        for answer in self.of():
            table.setdefault(answer.phase, Counter())[f"{answer.kind} {answer.status}"] += 1
        return {phase: dict(sorted(counter.items())) for phase, counter in table.items()}

    def slowest(self, *kinds: str) -> Answer:
        return max(self.of(*kinds), key=lambda answer: answer.seconds)

    def assert_answered(self, slowest_seconds: float, statuses: dict[str, set[int]]) -> None:
        """Every answer an HTTP one of the allowed statuses, within `slowest_seconds`;
        every 503 with `Retry-After`."""
        answers = self.of()
        assert answers
        for answer in answers:
            assert answer.status in statuses[answer.kind], answer
            if answer.status == 503:
                assert answer.retry_after == RETRY_AFTER, answer
                assert answer.body["error"]["code"] == "SERVICE_UNAVAILABLE", answer
        slowest = self.slowest()
        assert slowest.seconds < slowest_seconds, slowest


# --- The stores after the outage ---------------------------------------------------------


def sql_media(database_url: str) -> dict[str, str]:
    """Every media row, id -> state, read straight from the database."""
    engine = create_engine(database_url)
    try:
        with engine.connect() as connection:
            rows = connection.execute(text("SELECT id, state FROM media")).all()
            return {str(row[0]): str(row[1]) for row in rows}
    finally:
        engine.dispose()


def sql_count(database_url: str, table: str) -> int:
    engine = create_engine(database_url)
    try:
        with engine.connect() as connection:
            return int(connection.execute(text(f"SELECT count(*) FROM {table}")).scalar() or 0)
    finally:
        engine.dispose()


def scan_points(env: dict[str, str]) -> dict[str, Counter[str]]:
    """Count every point per media in both collections (server stopped: embedded stores)."""
    held = Stores.open(load_settings(environ=env))
    try:
        counts: dict[str, Counter[str]] = {space: Counter() for space in SPACES}
        for space in SPACES:
            for page in held.vectors.scan(space):
                counts[space].update(point.media_id for point in page)
        return counts
    finally:
        held.close()


def wait_until(
    condition: Callable[[], bool], timeout: float, recorder: Recorder | None = None
) -> float:
    """Wait for `condition`; return how long it took."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if condition():
            return time.monotonic() - started
        time.sleep(0.05)
    seen = json.dumps(recorder.counts()) if recorder else ""
    raise AssertionError(f"condition not reached within {timeout} s {seen}")


def assert_stores_agree(server: Server, recorder: Recorder, seeded: list[str]) -> dict[str, int]:
    """With the server stopped: every acknowledged deletion gone from SQL and both
    collections, every refused one intact (or, if the answer was lost after its deciding
    commit, gone with no point left), everything else untouched; `check` consistent.

    Returns the figures: acknowledged, refused intact, refused in doubt and applied.
    """
    assert server.process is None
    database_url = load_settings(environ=server.env).database_url
    rows = sql_media(database_url)
    points = scan_points(server.env)
    acknowledged, refused = recorder.acknowledged(), recorder.refused() - recorder.acknowledged()
    in_doubt = recorder.in_doubt()
    for media_id in seeded:
        found = (rows.get(media_id), points["hd"][media_id], points["ld"][media_id])
        if media_id in acknowledged:
            assert found == (None, 0, 0), (media_id, "acknowledged", found)
        elif media_id in in_doubt and found[0] is None:
            assert found == (None, 0, 0), (media_id, "in doubt, applied", found)
        else:  # refused, or never sent, or read only
            assert found == ("live", 1, 1), (media_id, found)
    checked = server.cli("check")
    assert (checked.returncode, checked.stdout.splitlines()[-1]) == (0, "consistent"), (
        checked.stdout + checked.stderr
    )
    assert "orphan points: hd 0, ld 0" in checked.stdout, checked.stdout
    assert "media missing points: 0" in checked.stdout, checked.stdout
    applied = {media_id for media_id in refused if media_id not in rows}
    return {
        "acknowledged": len(acknowledged),
        "refused_intact": len(refused - applied),
        "in_doubt_applied": len(applied),
    }


def unexpected_errors(log_path: Path, *expected: str) -> list[str]:
    """The server's log lines at error level other than the `expected` events, and any
    line carrying a traceback."""
    found = []
    for raw in log_path.read_text().splitlines():
        line = json.loads(raw) if raw.startswith("{") else {"event": raw, "level": "error"}
        if "Traceback" in raw or (
            line.get("level") in ("error", "critical") and line.get("event") not in expected
        ):
            found.append(raw)
    return found


def report(title: str, recorder: Recorder, **figures: object) -> None:
    slowest = recorder.slowest()
    print(
        f"\n{title}: {json.dumps(recorder.counts())}; slowest {slowest.kind} "
        f"{slowest.status} {slowest.seconds:.3f} s ({slowest.phase}); "
        + ", ".join(f"{name} {value}" for name, value in figures.items())
    )


def seed(env: dict[str, str], count: int, *rate_limits: str) -> tuple[list[str], list[str]]:
    """Write `count` live media of owner acme (one point per space) and one key of acme
    per rate limit ("" for the default); return the keys' secrets and the media ids.

    In this process, as `wickson-batch keys create` and `seed` would (server stopped).
    """
    held = Stores.open(load_settings(environ=env))
    try:
        secrets = [
            keys.create_key(held.db, owner="acme", rate_limit=limit or None)[1]
            for limit in rate_limits
        ]
        ids = [
            media_id
            for batch in seed_media(held.db, held.vectors, owner="acme", count=count, seed=1)
            for media_id in batch
        ]
    finally:
        held.close()
    assert len(ids) == count
    return secrets, ids


# --- Redis ------------------------------------------------------------------------------

REDIS_SLOWEST_SECONDS = 2.0  # the storage timeout is 0.5 s: one wait, plus a margin
TINY_LIMIT = "3/minute"


class RedisProcess:
    """A redis-server of the test's own, without persistence."""

    def __init__(self, binary: str, folder: Path) -> None:
        self.binary, self.folder, self.port = binary, folder, free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.process = subprocess.Popen(
            [self.binary, "--bind", "127.0.0.1", "--port", str(self.port), "--save", "",
             "--appendonly", "no", "--dir", str(self.folder)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with self.client() as client:
                    if client.ping():
                        return
            except redis.RedisError:
                time.sleep(0.05)
        raise AssertionError("redis-server did not start")

    def stop(self) -> None:
        assert self.process is not None
        self.process.kill()
        self.process.wait(10)
        self.process = None

    def freeze(self, frozen: bool) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP if frozen else signal.SIGCONT)

    def client(self) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=1)


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisProcess]:
    binary = shutil.which("redis-server") or shutil.which("redis-server", path="/usr/bin")
    if binary is None:
        missing_server("redis-server not installed (scripts/test-servers install)")
        raise AssertionError("unreachable")
    running = RedisProcess(binary, tmp_path)
    running.start()
    yield running
    if running.process is not None:
        running.freeze(False)
        running.stop()


def test_redis_hung_then_stopped_limits_from_memory_and_returns(
    own_redis: RedisProcess, tmp_path: Path
) -> None:
    env = server_env(
        tmp_path,
        RATELIMIT_STORAGE_URI=own_redis.url,
        RATE_LIMIT_DEFAULT="100000/minute",
        WEB_CONCURRENCY="2",
        RECONCILER_ENABLED="false",
    )
    server = Server(local_url(env), env, log_path=tmp_path / "server.log")
    (key, tiny), ids = seed(env, 3000, "", TINY_LIMIT)
    server.start()
    recorder = Recorder(server, key)
    try:
        recorder.start(
            # 10 ids a batch, 0.1 s apart: at least 10 s of batches however fast the
            # server is, so that some are sent once Redis is back.
            *[(recorder.batches, (ids[n::3], 10, 0.1, 0.05)) for n in range(3)],
            (recorder.reads, (ids[::-1], 0.02)),
            (recorder.probe, ("readyz", 0.1)),
        )
        time.sleep(1.0)
        recorder.set_phase("hung")
        own_redis.freeze(True)  # accepts connections, answers nothing
        time.sleep(2.5)
        during_hang = recorder.call("tiny", "GET", f"/v1/media/{ids[0]}", key=tiny)
        recorder.set_phase("stopped")
        own_redis.freeze(False)
        own_redis.stop()
        # Per worker in memory: 3 a minute each, so 12 requests cannot all pass.
        during_stop = [
            recorder.call("tiny", "GET", f"/v1/media/{ids[1]}", key=tiny).status for _ in range(12)
        ]
        time.sleep(2.0)

        own_redis.start()  # empty: no persistence
        recorder.set_phase("back")

        def ready_on_redis() -> bool:
            recent = recorder.of("readyz", phase="back")[-10:]
            return len(recent) == 10 and {rate_limits(a) for a in recent} == {"ok"}

        recovery = wait_until(ready_on_redis, 20)
        # Back on Redis: the tiny key's count shows up there again.
        for _ in range(4):
            server.request("GET", f"/v1/media/{ids[2]}", key=tiny)
        recorder.finish()
        with urllib.request.urlopen(server.url + "/metrics", timeout=10) as scraped:
            metrics_text = scraped.read().decode()
    finally:
        recorder.stop.set()
        server.stop()

    recorder.assert_answered(
        REDIS_SLOWEST_SECONDS,
        {"batch": {200}, "read": {200, 404}, "readyz": {200}, "tiny": {200, 404, 429}},
    )
    assert recorder.of("batch", phase="back"), "the batches went on once Redis was back"
    # Limits held from memory meanwhile.
    passed = [status for status in during_stop if status != 429]  # 404: deleted by then
    assert 429 in during_stop and passed and set(passed) <= {200, 404}, during_stop
    assert during_hang.status in (200, 404, 429)
    # Every acknowledged deletion gone, every other media intact with its points.
    figures = assert_stores_agree(server, recorder, ids)
    assert figures["acknowledged"] and not figures["refused_intact"]  # none was refused
    # Readiness: 200 throughout; degraded while Redis was away, ok once it was back.
    states = {(answer.phase, rate_limits(answer)) for answer in recorder.of("readyz")}
    assert ("up", "ok") in states and ("back", "ok") in states
    assert ("stopped", "degraded") in states or ("hung", "degraded") in states
    assert rate_limits(recorder.of("readyz")[-1]) == "ok"
    # Redis used again: the tiny key's bucket is in the restarted (empty) Redis.
    with own_redis.client() as client:
        assert any(b"key:" in k for k in client.keys("*"))
    # Logged at most once a minute per worker (the test is shorter than a minute), counted.
    lines = [json.loads(line) for line in (tmp_path / "server.log").read_text().splitlines()
             if line.startswith("{")]  # fmt: skip
    unavailable = [line for line in lines if line.get("event") == "ratelimit.storage_unavailable"]
    per_worker = [line["pid"] for line in unavailable]
    assert unavailable and all(per_worker.count(pid) == 1 for pid in per_worker), unavailable
    assert not unexpected_errors(tmp_path / "server.log")
    errors_total = [
        float(line.split()[-1])
        for line in metrics_text.splitlines()
        if line.startswith("wickson_ratelimit_storage_errors_total")
    ]
    assert errors_total and errors_total[0] >= len(unavailable), metrics_text
    report("redis outage", recorder, readiness_back_on_redis_s=f"{recovery:.2f}", **figures)


def rate_limits(answer: Answer) -> str:
    data = answer.body.get("data") or answer.body.get("error", {}).get("details", {})
    return str(data.get("checks", {}).get("rate_limits", ""))


# --- PostgreSQL stopped and started again ------------------------------------------------

PG_LOCK_TIMEOUT_MS = 1_000
PG_STATEMENT_TIMEOUT_MS = 3_000
# Down this long under load. A server that is stopped or starting refuses at once, and the
# sessions a shutdown ends fail at once (so does the re-read of a lost commit, 3 tries 0.2 s
# apart): no answer waits on a statement, at most on the pool (the lock timeout), plus a
# margin for a loaded 2-core machine.
PG_DOWN_SECONDS = 3.0
PG_SLOWEST_SECONDS = PG_LOCK_TIMEOUT_MS / 1000 + 2.0
RECOVERY_SECONDS = 5.0  # from PostgreSQL accepting connections to the first 200 batch


def postgres_bin() -> Path | None:
    """The newest installed PostgreSQL's server binaries, as scripts/test-servers finds them."""
    found = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/initdb"),
        key=lambda path: [int(part) for part in re.findall(r"\d+", path.parent.parent.name)],
    )
    if found:
        return found[-1].parent
    pg_ctl = shutil.which("pg_ctl")
    if pg_ctl and (Path(pg_ctl).parent / "initdb").exists():
        return Path(pg_ctl).parent
    return None


class PostgresProcess:
    """A PostgreSQL of the test's own on a free port of 127.0.0.1, trust authentication.

    `synchronous_commit = off`, as on the server the issue was found on: the service must
    make its deciding transaction durable itself. As root it runs as user `postgres` (it
    refuses root), in a folder of its own that user can enter (pytest's tmp_path cannot).
    """

    def __init__(self, bin_dir: Path) -> None:
        self.bin_dir = bin_dir
        self.folder = Path(tempfile.mkdtemp(prefix="wickson-outage-pg-"))
        self.folder.chmod(0o755)
        self.data = self.folder / "data"
        self.log = self.folder / "postgres.log"
        self.port = free_port()
        self.as_root = os.geteuid() == 0
        if self.as_root:
            shutil.chown(self.folder, "postgres")

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *args: str) -> None:
        command = [str(self.bin_dir / args[0]), *args[1:]]
        if self.as_root:
            command = ["runuser", "-u", "postgres", "--", *command]
        done = subprocess.run(command, capture_output=True, text=True, timeout=90)
        assert done.returncode == 0, (command, done.stdout, done.stderr, self.log_tail())

    def initdb(self) -> None:
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E",
                  "UTF8", "--no-sync")  # fmt: skip

    def start(self) -> None:
        options = (
            f"-c listen_addresses=127.0.0.1 -p {self.port} -c unix_socket_directories= "
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off "
            "-c max_connections=100"
        )
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-w", "-t", "60",
                  "start", "-o", options)  # fmt: skip

    def stop(self, mode: str) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "-t", "60", "stop")

    def running(self) -> bool:
        return (self.data / "postmaster.pid").exists()

    def log_tail(self) -> str:
        return "\n".join(self.log.read_text().splitlines()[-20:]) if self.log.exists() else ""

    def remove(self) -> None:
        if self.running():
            self.stop("immediate")
        shutil.rmtree(self.folder, ignore_errors=True)


@pytest.fixture
def own_postgres() -> Iterator[PostgresProcess]:
    bin_dir = postgres_bin()
    if bin_dir is None:
        missing_server("PostgreSQL not installed: no initdb (scripts/test-servers install)")
        raise AssertionError("unreachable")
    running = PostgresProcess(bin_dir)
    try:
        running.initdb()
        running.start()
        yield running
    finally:
        running.remove()


@pytest.mark.parametrize("mode", ["fast", "immediate"])
def test_postgresql_restarted_under_load_loses_no_acknowledged_deletion(
    own_postgres: PostgresProcess, tmp_path: Path, mode: str
) -> None:
    env = server_env(
        tmp_path,
        DATABASE_URL=own_postgres.url,
        RATE_LIMIT_DEFAULT="100000/minute",
        DB_LOCK_TIMEOUT_MS=str(PG_LOCK_TIMEOUT_MS),
        DB_STATEMENT_TIMEOUT_MS=str(PG_STATEMENT_TIMEOUT_MS),
        RECONCILE_INTERVAL_SECONDS="0.2",
        RECONCILE_GRACE_SECONDS="0",
    )
    server = Server(local_url(env), env, log_path=tmp_path / "server.log")
    (key,), ids = seed(env, 2400, "")
    server.start()
    recorder = Recorder(server, key)
    try:
        recorder.start(
            *[(recorder.batches, (ids[n::4], 10, 0.02, 0.25)) for n in range(4)],
            (recorder.reads, (ids[::-1], 0.02)),  # the last ids: deleted late, if at all
            (recorder.probe, ("readyz", 0.1)),
            (recorder.probe, ("healthz", 0.1)),
        )
        time.sleep(1.5)
        stopping = recorder.set_phase("stopping")
        own_postgres.stop(mode)  # -m fast: sessions ended; -m immediate: a crash, no checkpoint
        down = recorder.set_phase("down")
        time.sleep(PG_DOWN_SECONDS)
        starting = recorder.set_phase("starting")
        own_postgres.start()  # after `immediate`, crash recovery replays the WAL first
        back = recorder.set_phase("back")

        def batch_answered() -> bool:
            return any(a.status == 200 for a in recorder.of("batch", phase="back"))

        recovery = wait_until(batch_answered, RECOVERY_SECONDS, recorder)
        time.sleep(1.5)
        recorder.finish()
        assert any(a.status == 200 for a in recorder.of("readyz", phase="back"))
        # The reconciler removes the points of any batch decided before an answer was lost.
        wait_until(lambda: sql_count(own_postgres.url, "cleanup_tasks") == 0, 20)
    finally:
        recorder.stop.set()
        assert server.stop() == 0

    recorder.assert_answered(
        PG_SLOWEST_SECONDS,
        {
            "batch": {200, 503},
            "read": {200, 404, 503},
            "readyz": {200, 503},
            "healthz": {200},
        },
    )
    assert recorder.of("batch", phase="down") and not [
        a for a in recorder.of("batch", "read", phase="down") if a.status != 503
    ], "while PostgreSQL is down every keyed request is a 503"
    assert {a.status for a in recorder.of("readyz", phase="down")} == {503}
    # An answer 503 after its deciding commit names the operation; only those may be applied.
    figures = assert_stores_agree(server, recorder, ids)
    assert figures["acknowledged"] and figures["refused_intact"]
    # Each 503 logged once as the database being unavailable, never with a traceback.
    assert not unexpected_errors(
        tmp_path / "server.log", "database.unavailable", "database.decision_unknown"
    )
    statuses = Counter(a.status for a in recorder.of("batch"))
    report(
        f"postgresql -m {mode}",
        recorder,
        stop_s=f"{down - stopping:.2f}",
        down_s=f"{starting - down:.2f}",
        start_s=f"{back - starting:.2f}",
        first_batch_200_after_start_s=f"{recovery:.2f}",
        batches=dict(statuses),
        **figures,
    )


# --- A lock held on the media table ------------------------------------------------------

LOCK_TIMEOUT_MS = 1_000
LOCK_HOLD_SECONDS = 5.0  # well past the lock timeout
GUNICORN_THREADS = 8  # the default THREADS of the one worker on embedded vectors
BATCH_CLIENTS = 12  # more than the worker has threads: every thread waits, more queue
MARGIN_SECONDS = 1.5  # for a loaded 2-core machine
# A request may first wait for a thread (those ahead of it wait one lock timeout each),
# then wait on the lock itself; /healthz only for a thread; /readyz also for its ping.
LOCK_SLOWEST_SECONDS = 2 * LOCK_TIMEOUT_MS / 1000 + MARGIN_SECONDS
HEALTHZ_SLOWEST_SECONDS = LOCK_TIMEOUT_MS / 1000 + MARGIN_SECONDS


def most_in_flight(answers: list[Answer], start: float, end: float) -> int:
    """The most of `answers` the clients were waiting on at once between `start` and `end`."""
    edges = sorted(
        edge
        for answer in answers
        for edge in ((max(answer.sent, start), 1), (min(answer.sent + answer.seconds, end), -1))
        if answer.sent < end and answer.sent + answer.seconds > start
    )
    most = level = 0
    for _, step in edges:
        level += step
        most = max(most, level)
    return most


class TableLock:
    """Holds the lock a long migration or a careless operator would hold on `media`."""

    def __init__(self, database_url: str) -> None:
        self.url = make_url(database_url)
        self.release: Callable[[], None] | None = None

    def acquire(self) -> None:
        if self.url.get_backend_name() == "sqlite":
            assert self.url.database is not None
            writer = sqlite3.connect(self.url.database, isolation_level=None, timeout=10)
            writer.execute("BEGIN IMMEDIATE")  # the write lock: other writers wait
            writer.execute("UPDATE media SET state = state WHERE 0")

            def release_sqlite() -> None:
                writer.execute("ROLLBACK")
                writer.close()

            self.release = release_sqlite
            return
        engine = create_engine(self.url)
        connection = engine.connect()
        transaction = connection.begin()
        connection.execute(text("SET LOCAL lock_timeout = 0"))
        connection.execute(text("LOCK TABLE media IN ACCESS EXCLUSIVE MODE"))

        def release_postgresql() -> None:
            transaction.rollback()
            connection.close()
            engine.dispose()

        self.release = release_postgresql

    def drop(self) -> None:
        if self.release is not None:
            self.release()
            self.release = None


def test_a_lock_held_on_media_is_answered_within_the_lock_timeout(tmp_path: Path) -> None:
    stores = servers.server_settings(tmp_path) if servers.SERVER_PASS else {}
    env = server_env(
        tmp_path,
        RATE_LIMIT_DEFAULT="100000/minute",
        DB_LOCK_TIMEOUT_MS=str(LOCK_TIMEOUT_MS),
        RECONCILE_INTERVAL_SECONDS="0.2",
        RECONCILE_GRACE_SECONDS="0",
        **stores,
    )
    env.pop("THREADS", None)
    assert load_settings(environ=env).threads == GUNICORN_THREADS
    database_url = load_settings(environ=env).database_url
    postgresql = database_url.startswith("postgresql")
    server = Server(local_url(env), env, log_path=tmp_path / "server.log")
    (key,), ids = seed(env, 3000, "")
    server.start()
    recorder = Recorder(server, key)
    lock = TableLock(database_url)
    try:
        recorder.start(
            *[(recorder.batches, (ids[n::BATCH_CLIENTS], 5, 0.05, 0.0))
              for n in range(BATCH_CLIENTS)],
            (recorder.reads, (ids[::-1], 0.05)),
            (recorder.probe, ("healthz", 0.2)),
            (recorder.probe, ("readyz", 0.3)),
        )  # fmt: skip
        time.sleep(1.0)
        acquiring = time.monotonic()
        lock.acquire()
        locked = recorder.set_phase("locked")
        time.sleep(LOCK_HOLD_SECONDS)
        lock.drop()
        released = recorder.set_phase("released")

        def batch_answered() -> bool:
            return any(a.status == 200 and a.sent >= released for a in recorder.of("batch"))

        recovery = wait_until(batch_answered, RECOVERY_SECONDS, recorder)
        time.sleep(1.0)
        recorder.finish()
        wait_until(lambda: sql_count(database_url, "cleanup_tasks") == 0, 20)
    finally:
        recorder.stop.set()
        lock.drop()
        assert server.stop() == 0

    reads = {200, 404, 503} if postgresql else {200, 404}  # SQLite in WAL mode reads on
    recorder.assert_answered(
        LOCK_SLOWEST_SECONDS,
        {"batch": {200, 503}, "read": reads, "healthz": {200}, "readyz": {200, 503}},
    )
    batches = recorder.of("batch")
    before = [a for a in batches if a.sent + a.seconds < acquiring]
    assert before and 200 in {a.status for a in before}
    if postgresql:  # row locks: the concurrent batches never wait long on each other
        assert {a.status for a in before} == {200}, Counter(a.status for a in before)
    # (SQLite has one writer at a time: of 12 batches at once, one may wait out the busy
    # timeout and be refused, with Retry-After, as the lock timeout says.)
    # While the lock held, every request thread waited on it, and more requests queued.
    waiting = most_in_flight(batches, locked, released)
    assert waiting >= GUNICORN_THREADS, waiting
    # Every batch sent and answered within the lock was refused.
    within = [a for a in batches if a.sent >= locked and a.sent + a.seconds < released]
    assert within and {a.status for a in within} == {503}, Counter(a.status for a in within)
    assert all(a.seconds >= LOCK_TIMEOUT_MS / 1000 * 0.9 for a in within)  # it did wait
    # /healthz answered meanwhile, within one lock timeout and a margin.
    healthz = recorder.of("healthz", phase="locked")
    assert len(healthz) >= 3
    slowest_healthz = max(a.seconds for a in healthz)
    assert slowest_healthz < HEALTHZ_SLOWEST_SECONDS, slowest_healthz
    # /readyz: on PostgreSQL its ping reads media under its own 1 s timeouts: 503, naming
    # the database; SQLite's readers are not blocked by a writer: 200.
    readyz = [
        a
        for a in recorder.of("readyz", phase="locked")
        if a.sent >= locked and a.sent + a.seconds < released
    ]
    assert readyz
    if postgresql:
        assert {a.status for a in readyz} == {503}, [
            (a.status, round(a.sent - locked, 2), round(a.seconds, 2)) for a in readyz
        ]
        assert {a.body["error"]["details"]["checks"]["database"] for a in readyz} == {"unavailable"}
    else:
        assert {a.status for a in readyz} == {200}
    assert recorder.of("readyz")[-1].status == 200
    figures = assert_stores_agree(server, recorder, ids)
    assert figures["acknowledged"] and figures["refused_intact"]
    assert not figures["in_doubt_applied"]
    assert not unexpected_errors(tmp_path / "server.log", "database.unavailable")
    report(
        f"lock on media ({'postgresql' if postgresql else 'sqlite'})",
        recorder,
        lock_held_s=f"{released - locked:.2f}",
        batches_waiting_at_once=waiting,
        slowest_healthz_s=f"{slowest_healthz:.3f}",
        slowest_readyz_s=f"{max(a.seconds for a in recorder.of('readyz', phase='locked')):.3f}",
        first_batch_200_after_release_s=f"{recovery:.2f}",
        **figures,
    )


# --- PostgreSQL's durability settings (the server pass, through Flask's test client) -------


@postgres_only
def test_the_deciding_transaction_commits_synchronously_whatever_the_default(
    tmp_path: Path,
) -> None:
    url = settings_for(tmp_path, "qdrant-local")["DATABASE_URL"]
    admin = create_engine(url, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        name = connection.execute(text("SELECT current_database()")).scalar()
        connection.execute(text(f'ALTER DATABASE "{name}" SET synchronous_commit = off'))
    try:
        app = create_app(settings_for(tmp_path, "qdrant-local"))
        try:
            _delete_and_watch(app)
        finally:
            stores_of(app).close()
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'ALTER DATABASE "{name}" RESET synchronous_commit'))
        admin.dispose()


def _delete_and_watch(app: Flask) -> None:
    db = stores_of(app).db
    _, secret = keys.create_key(db, owner="alice", scopes=SCOPES)
    alice = Caller(app.test_client(), secret, app)
    media_id = alice.create()
    seen: list[tuple[str, int]] = []

    def watch(session: Session, *_args: Any) -> None:
        connection = session.connection()
        setting = connection.execute(text("SHOW synchronous_commit")).scalar()
        tasks = connection.execute(text("SELECT count(*) FROM cleanup_tasks")).scalar()
        seen.append((str(setting), int(tasks or 0)))

    event.listen(db.sessions, "before_commit", watch)
    try:
        response = alice.delete_batch([media_id])
    finally:
        event.remove(db.sessions, "before_commit", watch)

    assert response.status_code == 200
    # The deciding transaction is the one that queued the cleanup; the others keep the default.
    assert [setting for setting, tasks in seen if tasks] == ["on"]
    assert {setting for setting, tasks in seen if not tasks} == {"off"}


@postgres_only
def test_start_up_warns_when_postgresql_runs_with_fsync_off(tmp_path: Path) -> None:
    # scripts/test-servers runs its PostgreSQL with fsync = off, as a careless server would.
    url = settings_for(tmp_path, "qdrant-local")["DATABASE_URL"]
    probe = create_engine(url)
    with probe.connect() as connection:
        fsync = connection.execute(text("SHOW fsync")).scalar()
    probe.dispose()
    assert fsync == "off", "the test server was expected to run with fsync = off"

    settings = load_settings(settings_for(tmp_path, "qdrant-local"))
    with capture_logs() as logs:
        held = Stores.open(settings)  # what each worker does at start
    held.close()

    assert [entry["log_level"] for entry in logs if entry["event"] == "database.fsync_off"] == [
        "warning"
    ]
