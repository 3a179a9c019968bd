"""Schema migrations (DESIGN.md section 8) on SQLite and, in the server pass, PostgreSQL.

The database of the release before migrations is made by `create_all` of that release's
own models, kept verbatim in tests/models_4fe7ebd.py (wickson_batch/models.py of commit
4fe7ebd), so these tests need no git history.
"""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from click.testing import CliRunner, Result
from sqlalchemy import Engine, inspect, select, text
from sqlalchemy.orm import Session

from tests import models_4fe7ebd as previous
from tests.faults import FlakyVectors
from tests.helpers import settings_for, vector
from wickson_batch.cli import main
from wickson_batch.config import Settings, load_settings
from wickson_batch.db import (
    _LOCK,
    MIGRATE_LOCK_SUFFIX,
    Database,
    SchemaChange,
    alembic_config,
    make_engine,
)
from wickson_batch.models import Base
from wickson_batch.services import deletion, jobs, keys, media
from wickson_batch.services import job_runner as runner_service
from wickson_batch.services.selection import parse_selection
from wickson_batch.services.stores import Stores
from wickson_batch.vectors import build_vector_index

FIRST = "0001_initial"
HEAD = "0004_sqlite_incremental_vacuum"
# The revision before 0004, which it is tested from.
BEFORE_VACUUM = "0003_deletion_jobs"
# The first revision's tables (release 0.1.0's), and every table at head.
TABLES = {"api_keys", "media", "cleanup_tasks", "operations", "idempotency_keys"}
ALL_TABLES = TABLES | {"deletion_jobs", "deletion_job_items"}


def settings(folder: Path) -> Settings:
    """Settings whose database is this folder's (a SQLite file, or a PostgreSQL schema)."""
    return load_settings(settings_for(folder, "qdrant-local"), environ={})


@pytest.fixture
def url(tmp_path: Path) -> str:
    return settings(tmp_path).database_url


@pytest.fixture
def engine(url: str) -> Iterator[Engine]:
    made = make_engine(url)
    yield made
    made.dispose()


def previous_media(engine: Engine, count: int, owner: str = "alice") -> list[str]:
    """Write `count` media rows as the previous release did (its own model); return the ids."""
    rows = [
        previous.Media(
            id=f"vec-{owner}{n:04d}",
            owner=owner,
            state=previous.MediaState.PENDING if n == 2 else previous.MediaState.LIVE,
            title=f"clip {n}" if n else None,
            metadata_={"n": n, "tags": ["a", "é"]} if n else None,
            hd_count=1,
            ld_count=n,
            created_at=datetime(2026, 1, 1, tzinfo=UTC) + timedelta(seconds=n // 2),
        )
        for n in range(count)
    ]
    ids = [row.id for row in rows]
    with Session(engine) as session:
        session.add_all(rows)
        session.commit()
    return ids


def upgrade_to(engine: Engine, target: str) -> None:
    """Run the migrations up to `target` alone, as a release that stopped there did."""
    with engine.begin() as connection:
        command.upgrade(alembic_config(connection), target)


def upgrade(url: str) -> SchemaChange:
    db = Database(url)
    try:
        return db.upgrade_schema()
    finally:
        db.dispose()


def tables(engine: Engine) -> set[str]:
    return set(inspect(engine).get_table_names())


def differences(engine: Engine) -> list[Any]:
    """What Alembic's autogenerate would change to make the database match the models."""
    with engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        return list(compare_metadata(context, Base.metadata))


def revision(engine: Engine) -> str | None:
    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def rows(engine: Engine) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table of the previous release, in primary-key order."""
    found: dict[str, list[tuple[Any, ...]]] = {}
    with engine.connect() as connection:
        for table in previous.Base.metadata.sorted_tables:
            query = select(table).order_by(*table.primary_key.columns)
            found[table.name] = [tuple(row) for row in connection.execute(query)]
    return found


def structure(engine: Engine) -> dict[str, Any]:
    """The schema as the database reports it: columns, keys, indexes, and SQLite's own DDL."""
    found: dict[str, Any] = {}
    inspector = inspect(engine)
    for table in sorted(TABLES):
        found[table] = {
            "columns": [
                (c["name"], repr(c["type"]), c["nullable"], c.get("default"))
                for c in inspector.get_columns(table)
            ],
            "primary_key": inspector.get_pk_constraint(table),
            "unique": inspector.get_unique_constraints(table),
            "indexes": sorted(
                (
                    index["name"],
                    index["column_names"],
                    index["unique"],
                    {key: str(value) for key, value in index.get("dialect_options", {}).items()},
                )
                for index in inspector.get_indexes(table)
            ),
        }
    if engine.dialect.name == "sqlite":
        with engine.connect() as connection:
            found["sqlite_master"] = sorted(
                tuple(row)
                for row in connection.execute(
                    text("SELECT type, name, tbl_name, sql FROM sqlite_master")
                )
                if "alembic_version" not in row.tbl_name
            )
    return found


def test_a_database_of_the_previous_release_is_stamped_and_keeps_every_row(
    tmp_path: Path, engine: Engine
) -> None:
    config = settings(tmp_path)
    previous.Base.metadata.create_all(engine)
    db = Database(config.database_url)  # no migration: the previous release's tables as they are
    inner = build_vector_index(config)
    inner.ensure()
    try:
        info, secret = keys.create_key(db, owner="alice", rate_limit="50/minute", name="ci")
        revoked, _ = keys.create_key(db, owner="bob", scopes=("media:read",))
        keys.revoke_key(db, revoked.id)
        ids = previous_media(engine, 3)
        # The vector store refuses the deletion: the points stay owed, as cleanup tasks.
        outcome = deletion.delete_batch(
            db,
            FlakyVectors(inner),
            owner="alice",
            media_ids=[ids[0], ids[1], "vec-" + "0" * 32],
            reason="GDPR request 7",
            api_key_id=info.id,
            idempotency_key="retry-safe-1",
        )
        assert outcome.cleanup_pending
    finally:
        inner.close()
        db.dispose()
    before = rows(engine)
    assert all(before.values()), {name: len(found) for name, found in before.items()}
    assert "alembic_version" not in tables(engine)

    held = Stores.open(config)
    try:
        assert held.db.describe_revision() == f"{HEAD} (head)"
        found = keys.authenticate(held.db, secret)
        assert found is not None and found.owner == "alice"
    finally:
        held.close()

    assert rows(engine) == before
    assert tables(engine) == ALL_TABLES | {"alembic_version"}
    assert differences(engine) == []


def test_the_first_revision_is_exactly_the_schema_create_all_made(
    tmp_path: Path, engine: Engine
) -> None:
    upgrade_to(engine, FIRST)
    reference = make_engine(settings(tmp_path / "create_all").database_url)
    try:
        previous.Base.metadata.create_all(reference)
        assert structure(engine) == structure(reference)
    finally:
        reference.dispose()


def test_after_upgrade_autogenerate_finds_nothing_to_change(url: str, engine: Engine) -> None:
    change = upgrade(url)
    assert (change.before, change.after, change.stamped) == (None, HEAD, False)
    assert differences(engine) == []
    assert revision(engine) == HEAD


def invoke(url: str, *args: str) -> Result:
    env: dict[str, str | None] = {"DATABASE_URL": url, "DATA_DIR": None}
    return CliRunner().invoke(main, list(args), env=env)


def test_the_db_commands_upgrade_report_and_downgrade(url: str, engine: Engine) -> None:
    result = invoke(url, "db", "current")
    assert (result.exit_code, result.stdout) == (0, "")
    assert result.stderr == "no revision: the database is empty or was made before migrations\n"

    result = invoke(url, "db", "upgrade")
    assert (result.exit_code, result.stdout) == (0, f"upgraded base -> {HEAD} (head)\n")
    assert tables(engine) == ALL_TABLES | {"alembic_version"}
    result = invoke(url, "db", "current")
    assert (result.exit_code, result.stdout) == (0, f"{HEAD} (head)\n")
    result = invoke(url, "db", "upgrade")
    assert result.stdout == f"nothing to do: the database is at {HEAD} (head)\n"

    result = invoke(url, "db", "downgrade", "base")
    assert (result.exit_code, result.stdout) == (0, f"downgraded {HEAD} -> base\n")
    assert tables(engine) == {"alembic_version"}
    assert revision(engine) is None

    result = invoke(url, "db", "upgrade")
    assert (result.exit_code, result.stdout) == (0, f"upgraded base -> {HEAD} (head)\n")
    assert differences(engine) == []


def test_db_upgrade_stamps_the_previous_release_schema(url: str, engine: Engine) -> None:
    previous.Base.metadata.create_all(engine)
    result = invoke(url, "db", "upgrade")
    assert (result.exit_code, result.stdout) == (
        0,
        f"stamped the tables made before migrations as {FIRST}\n"
        f"upgraded {FIRST} -> {HEAD} (head)\n",
    )
    assert revision(engine) == HEAD


def media_rows(engine: Engine) -> list[tuple[Any, ...]]:
    with engine.connect() as connection:
        return [tuple(row) for row in connection.execute(text("SELECT * FROM media ORDER BY id"))]


def test_0002_keeps_every_media_row_with_no_parent_and_adds_the_listing_index(
    engine: Engine, url: str
) -> None:
    upgrade_to(engine, FIRST)
    previous_media(engine, 5, owner="alice")
    previous_media(engine, 2, owner="bob")
    before = rows(engine)

    change = upgrade(url)

    assert (change.before, change.after, change.stamped) == (FIRST, HEAD, False)
    assert rows(engine) == before  # every column the previous revision had, row for row
    with engine.connect() as connection:
        parents = connection.execute(text("SELECT id, parent_id FROM media ORDER BY id")).all()
    assert [tuple(row) for row in parents] == [(row[0], None) for row in before["media"]]
    assert len(parents) == 7
    indexes = {ix["name"]: ix["column_names"] for ix in inspect(engine).get_indexes("media")}
    assert indexes["ix_media_owner_created"] == ["owner", "created_at", "id"]
    assert indexes["ix_media_parent_id"] == ["parent_id"]
    assert differences(engine) == []


def test_0002_downgrades_to_0001_keeping_every_row(engine: Engine, url: str) -> None:
    upgrade_to(engine, FIRST)
    previous_media(engine, 4)
    upgrade(url)
    before = rows(engine)

    db = Database(url)
    try:
        change = db.downgrade_schema(FIRST)
    finally:
        db.dispose()

    assert (change.before, change.after) == (HEAD, FIRST)
    assert rows(engine) == before
    assert "parent_id" not in {column["name"] for column in inspect(engine).get_columns("media")}
    assert len(media_rows(engine)) == 4


def auto_vacuum(engine: Engine) -> int | None:
    """SQLite's auto_vacuum mode (0 none, 2 incremental); None on PostgreSQL."""
    if engine.dialect.name != "sqlite":
        return None
    with engine.connect() as connection:
        # A read first: the pragma answers from the header as the connection last read it.
        connection.exec_driver_sql("SELECT count(*) FROM sqlite_master").scalar()
        return int(connection.exec_driver_sql("PRAGMA auto_vacuum").scalar() or 0)


def test_0004_makes_sqlite_give_pages_back_and_keeps_every_row(
    tmp_path: Path, url: str, engine: Engine
) -> None:
    config = settings(tmp_path)
    db = Database(url)
    inner = build_vector_index(config)
    inner.ensure()
    try:
        db.upgrade_schema()
        db.downgrade_schema(BEFORE_VACUUM)
        assert auto_vacuum(engine) in (0, None)
        info, secret = keys.create_key(db, owner="alice", name="ci")
        ids = [
            media.create_media(
                db,
                inner,
                owner="alice",
                hd_vectors=[vector(config.hd_dim, n)],
                ld_vectors=[vector(config.ld_dim, n)],
                title=f"clip {n}",
                metadata={"n": n, "pad": "x" * 2000},  # rows that leave free pages behind
            ).media_id
            for n in range(200)
        ]
        deletion.delete_batch(db, inner, owner="alice", media_ids=ids[:100], reason="r")
        before = rows(engine)

        change = db.upgrade_schema()

        assert (change.before, change.after) == (BEFORE_VACUUM, HEAD)
        assert rows(engine) == before
        assert differences(engine) == []
        found = keys.authenticate(db, secret)
        assert found is not None and found.key_id == info.id
        deletion.delete_batch(db, inner, owner="alice", media_ids=ids[100:], reason="r")
        if engine.dialect.name == "sqlite":
            assert auto_vacuum(engine) == 2  # INCREMENTAL
            assert db.reclaim_pages() > 0
            with engine.connect() as connection:
                assert connection.exec_driver_sql("PRAGMA freelist_count").scalar() == 0
        else:
            assert db.reclaim_pages() == 0  # PostgreSQL's autovacuum does it
        db.downgrade_schema(BEFORE_VACUUM)
        assert auto_vacuum(engine) in (0, None)
        assert db.reclaim_pages() == 0
    finally:
        inner.close()
        db.dispose()


def test_an_unknown_revision_is_a_one_line_error(url: str) -> None:
    invoke(url, "db", "upgrade")
    result = invoke(url, "db", "downgrade", "nonsense")
    assert (result.exit_code, result.stdout) == (1, "")
    assert result.stderr == "Error: Can't locate revision identified by 'nonsense'\n"


def test_db_upgrade_without_a_database_server_is_one_line() -> None:
    result = invoke("postgresql+psycopg://nobody@127.0.0.1:1/none", "db", "upgrade")
    assert result.exit_code == 1
    assert result.stdout == ""
    (line,) = result.stderr.splitlines()
    assert line.startswith("Error: (psycopg.OperationalError) connection failed:"), line


def test_tables_of_unknown_origin_are_left_alone(url: str, engine: Engine) -> None:
    previous.Base.metadata.tables["media"].create(engine)
    result = invoke(url, "db", "upgrade")
    assert result.exit_code == 1
    assert result.stderr == (
        "Error: the database holds some of wickson-batch's tables but not api_keys, "
        "cleanup_tasks, idempotency_keys, operations, and no alembic_version table: it was "
        "not made by wickson-batch; nothing was changed\n"
    )
    assert tables(engine) == {"media"}


# A process that upgrades `url` once `go` exists, so that several start at the same moment.
UPGRADER = textwrap.dedent(
    """
    import os, sys, time
    from wickson_batch.db import Database
    url, ready, go = sys.argv[1:]
    db = Database(url)
    open(ready, "w").close()
    while not os.path.exists(go):
        time.sleep(0.005)
    change = db.upgrade_schema()
    print(change.before, change.after, change.stamped)
    """
)


def upgraders(url: str, folder: Path, count: int) -> list[subprocess.Popen[str]]:
    """Start `count` upgrading processes; return once each waits for the signal to go."""
    go = folder / "go"
    started = [
        subprocess.Popen(
            [sys.executable, "-c", UPGRADER, url, str(folder / f"ready{n}"), str(go)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for n in range(count)
    ]
    deadline = time.monotonic() + 30
    while not all((folder / f"ready{n}").exists() for n in range(count)):
        assert time.monotonic() < deadline, "the upgraders did not start"
        time.sleep(0.01)
    return started


def finished(process: subprocess.Popen[str]) -> str:
    out, err = process.communicate(timeout=30)
    assert process.returncode == 0, err
    return out


def test_processes_upgrading_one_fresh_database_at_once_all_succeed(
    tmp_path: Path, url: str, engine: Engine
) -> None:
    started = upgraders(url, tmp_path, 3)
    (tmp_path / "go").touch()
    outputs = sorted(finished(process) for process in started)
    # One created the tables; the others waited for its lock, then found them at head.
    assert outputs == [
        f"{HEAD} {HEAD} False\n",
        f"{HEAD} {HEAD} False\n",
        f"None {HEAD} False\n",
    ]
    assert differences(engine) == []
    with engine.connect() as connection:
        versions = connection.execute(text("SELECT version_num FROM alembic_version")).all()
    assert [tuple(row) for row in versions] == [(HEAD,)]


@contextmanager
def migration_lock_held(engine: Engine) -> Iterator[None]:
    """Hold the lock an upgrade takes: PostgreSQL's advisory lock, or the file beside SQLite's."""
    if engine.dialect.name == "postgresql":
        with engine.connect() as connection:
            connection.execute(text("SELECT pg_advisory_lock(:key)"), {"key": _LOCK})
            connection.commit()
            try:
                yield
            finally:
                connection.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": _LOCK})
                connection.commit()
        return
    path = os.path.abspath(str(engine.url.database)) + MIGRATE_LOCK_SUFFIX
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def test_an_upgrade_waits_while_another_process_holds_the_lock(
    tmp_path: Path, url: str, engine: Engine
) -> None:
    with migration_lock_held(engine):
        (process,) = upgraders(url, tmp_path, 1)
        (tmp_path / "go").touch()
        time.sleep(0.5)
        assert process.poll() is None
        assert tables(engine) == set()
    assert finished(process) == f"None {HEAD} False\n"
    assert differences(engine) == []


def revision_before(target: str) -> str:
    """Return the down_revision of `target`."""
    found = ScriptDirectory.from_config(alembic_config()).get_revision(target)
    assert found is not None and isinstance(found.down_revision, str)
    return found.down_revision


def test_0003_adds_the_job_tables_and_keeps_every_row(
    tmp_path: Path, url: str, engine: Engine
) -> None:
    config = settings(tmp_path)
    before_jobs = revision_before("0003_deletion_jobs")
    upgrade_to(engine, before_jobs)
    db = Database(config.database_url)
    inner = build_vector_index(config)
    inner.ensure()
    try:
        info, _ = keys.create_key(db, owner="alice")
        ids = [
            media.create_media(
                db,
                inner,
                owner="alice",
                hd_vectors=[vector(config.hd_dim, n)],
                ld_vectors=[vector(config.ld_dim, n)],
                metadata={"n": n},
            ).media_id
            for n in range(4)
        ]
        deletion.delete_batch(
            db, FlakyVectors(inner), owner="alice", media_ids=ids[:1], api_key_id=info.id,
            idempotency_key="before-0003",
        )  # fmt: skip
    finally:
        db.dispose()
    before = rows(engine)
    assert not {"deletion_jobs", "deletion_job_items"} & tables(engine)

    upgrade(url)

    assert rows(engine) == before
    assert tables(engine) >= ALL_TABLES
    assert differences(engine) == []
    # The new tables work beside the old rows: a job over them runs to its end.
    db = Database(config.database_url)
    try:
        view, _ = jobs.create_job(db, owner="alice", selection=parse_selection(ids))
        assert runner_service.claim_next_job(db, "migration-test", 30) == view.job_id
        runner_service.resolve_manifest(db, view.job_id, "migration-test", max_media=100)
        while runner_service.run_chunk(db, inner, view.job_id, "migration-test", chunk_size=2):
            pass
        done = jobs.get_job(db, owner="alice", job_id=view.job_id)
        assert (done.total, done.deleted, done.failed) == (4, 3, 1)
    finally:
        inner.close()
        db.dispose()

    downgraded = Database(url)
    try:
        downgraded.downgrade_schema(before_jobs)
    finally:
        downgraded.dispose()
    assert not {"deletion_jobs", "deletion_job_items"} & tables(engine)
    assert tables(engine) >= TABLES
