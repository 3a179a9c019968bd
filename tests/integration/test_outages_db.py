"""The database locked or slow under load: every answer 200 or a prompt 503 with Retry-After.

Runs on SQLite, and on PostgreSQL in the server pass (WICKSON_TEST_BACKEND=server).
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session
from structlog.testing import capture_logs

from tests import servers
from tests.helpers import Caller, settings_for, settings_of, stores_of
from wickson_batch import create_app
from wickson_batch.api.errors import UNAVAILABLE_RETRY_AFTER_SECONDS
from wickson_batch.config import load_settings
from wickson_batch.protocol import RETRY_AFTER_HEADER, SCOPES
from wickson_batch.services import keys
from wickson_batch.services.stores import Stores

LOCK_MS = 500
# What an answer may take past the lock timeout (a request may wait on it more than once:
# the lookup, then the deletion), and how long the lock is held.
MARGIN_SECONDS = 1.5
HOLD_SECONDS = 4.0
THREADS = 6

postgres_only = pytest.mark.skipif(
    not servers.SERVER_PASS, reason="PostgreSQL-only behaviour: runs in the server pass"
)


@pytest.fixture
def app(tmp_path: Path) -> Iterator[Flask]:
    app = create_app(settings_for(tmp_path, "qdrant-local", DB_LOCK_TIMEOUT_MS=LOCK_MS))
    yield app
    stores_of(app).close()


@dataclass
class Answer:
    kind: str
    ids: list[str]
    status: int
    retry_after: str | None
    seconds: float
    deleted: list[str]


def _load(alice: Caller, pools: list[list[str]], until: float) -> list[Answer]:
    """Send batches of two and reads from THREADS threads until `until`; return every answer."""
    answers: list[Answer] = []
    lock = threading.Lock()

    def work(pool: list[str]) -> None:
        while pool and time.monotonic() < until:
            ids = [pool.pop(), pool.pop()] if len(pool) >= 2 else [pool.pop()]
            for kind in ("read", "batch"):
                started = time.monotonic()
                if kind == "read":
                    response = alice.get(ids[0])
                else:
                    response = alice.delete_batch(ids)
                seconds = time.monotonic() - started
                data = response.get_json() or {}
                deleted = (
                    [item["media_id"] for item in data["data"]["deleted"]]
                    if kind == "batch" and response.status_code == 200
                    else []
                )
                with lock:
                    answers.append(
                        Answer(
                            kind,
                            ids,
                            response.status_code,
                            response.headers.get(RETRY_AFTER_HEADER),
                            seconds,
                            deleted,
                        )
                    )

    threads = [threading.Thread(target=work, args=(pool,)) for pool in pools]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=HOLD_SECONDS + 30)
        assert not thread.is_alive(), "a request thread is stuck"
    return answers


def _check(alice: Caller, answers: list[Answer]) -> None:
    assert answers
    for answer in answers:
        assert answer.status in (200, 503), answer
        if answer.status == 503:
            assert answer.retry_after == str(UNAVAILABLE_RETRY_AFTER_SECONDS), answer
        assert answer.seconds < LOCK_MS / 1000 + MARGIN_SECONDS, answer
    assert any(answer.status == 503 for answer in answers if answer.kind == "batch")
    for answer in answers:
        if answer.kind != "batch":
            continue
        for media_id in answer.ids:
            expected = 404 if media_id in answer.deleted else 200
            if answer.status == 503:
                expected = 200  # refused: intact
            assert alice.get(media_id).status_code == expected, (answer, media_id)


def _pools(alice: Caller) -> list[list[str]]:
    return [[alice.create(seed=t * 100 + i) for i in range(12)] for t in range(THREADS)]


def _healthz_and_readyz(app: Flask) -> tuple[float, int, str | None]:
    client = app.test_client()
    started = time.monotonic()
    assert client.get("/healthz").status_code == 200
    healthz = time.monotonic() - started
    ready = client.get("/readyz")
    return healthz, ready.status_code, ready.headers.get(RETRY_AFTER_HEADER)


@postgres_only
def test_a_table_lock_on_postgresql_is_answered_within_the_lock_timeout(
    app: Flask, alice: Caller
) -> None:
    pools = _pools(alice)
    holder = create_engine(settings_of(app).database_url)
    try:
        with holder.connect() as connection, connection.begin():
            connection.execute(text("LOCK TABLE media IN ACCESS EXCLUSIVE MODE"))
            until = time.monotonic() + HOLD_SECONDS
            probe: list[tuple[float, int, str | None]] = []

            def probe_once() -> None:
                time.sleep(1.0)
                probe.append(_healthz_and_readyz(app))

            prober = threading.Thread(target=probe_once)
            prober.start()
            answers = _load(alice, pools, until)
            prober.join()
    finally:
        holder.dispose()

    healthz_seconds, ready_status, ready_retry = probe[0]
    assert healthz_seconds < 0.5
    assert (ready_status, ready_retry) == (503, str(UNAVAILABLE_RETRY_AFTER_SECONDS))
    assert app.test_client().get("/readyz").status_code == 200
    _check(alice, answers)


def test_a_writer_holding_sqlite_is_answered_within_the_busy_timeout(
    app: Flask, alice: Caller
) -> None:
    url = make_url(settings_of(app).database_url)
    if url.get_backend_name() != "sqlite":
        pytest.skip("SQLite's writer lock; the server pass runs the PostgreSQL lock instead")
    pools = _pools(alice)
    assert url.database is not None
    writer = sqlite3.connect(url.database, isolation_level=None)
    try:
        writer.execute("BEGIN IMMEDIATE")
        answers = _load(alice, pools, time.monotonic() + HOLD_SECONDS)
        healthz_seconds, ready_status, _ = _healthz_and_readyz(app)
        writer.execute("ROLLBACK")
    finally:
        writer.close()

    assert healthz_seconds < 0.5
    assert ready_status == 200  # in WAL mode readers still read while a writer holds it
    _check(alice, answers)
    assert {answer.status for answer in answers if answer.kind == "read"} == {200}


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
