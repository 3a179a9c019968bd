"""Engine, sessionmaker, the unit of work (the only place that commits), the schema's
migrations (Alembic, one process at a time), DatabaseUnavailable and SchemaError."""

from __future__ import annotations

import fcntl
import io
import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from types import TracebackType
from typing import Any, TextIO, TypeVar

import structlog
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.util import CommandError
from sqlalchemy import Connection, Engine, create_engine, event, inspect, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.orm import Session, sessionmaker

# The defaults of DB_LOCK_TIMEOUT_MS and DB_STATEMENT_TIMEOUT_MS (config.py reads them).
LOCK_TIMEOUT_MS = 2_000
STATEMENT_TIMEOUT_MS = 10_000
# How long /readyz waits for the database to answer its ping.
PING_TIMEOUT_MS = 1_000
# The PostgreSQL advisory lock that serialises schema migrations across processes.
_LOCK = 0x77696B73  # "wiks"
# Beside a SQLite file `<path>`: the file whose flock serialises its migrations.
MIGRATE_LOCK_SUFFIX = ".migrate.lock"

MIGRATIONS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "migrations")
# The revision that is the schema release 0.1.0 made with `create_all`, and its tables: a
# database holding them and no `alembic_version` table is stamped at it, never recreated.
FIRST_REVISION = "0001_initial"
_FIRST_TABLES = frozenset({"api_keys", "media", "cleanup_tasks", "operations", "idempotency_keys"})
_VERSION_TABLE = "alembic_version"

T = TypeVar("T")

# Statements a migration leaves to run after its transaction commits, outside any
# transaction (SQLite's VACUUM cannot run in one): `outside_transaction` queues them.
_AFTER_COMMIT = "wickson_after_commit"
# SQLite's `PRAGMA auto_vacuum` value for INCREMENTAL.
SQLITE_INCREMENTAL_VACUUM = 2
# Pages one `PRAGMA incremental_vacuum(N)` frees (4 MiB at the default page size): each
# step is a short write transaction, so requests' writes wait no longer than that.
RECLAIM_STEP_PAGES = 1024

log = structlog.get_logger("wickson_batch")


class DatabaseUnavailable(Exception):
    """The SQL database could not be reached; nothing was changed."""


class SchemaError(Exception):
    """The schema cannot be migrated as asked (an unknown revision, tables of unknown origin)."""


@dataclass(frozen=True)
class SchemaChange:
    """What a migration did: the revision before and after (None: no revision, `base`)."""

    before: str | None
    after: str | None
    # The tables were made before migrations and taken over as they are: `before` is then
    # the first revision, the one they were stamped at.
    stamped: bool = False


def alembic_config(connection: Connection | None = None, stdout: TextIO | None = None) -> Config:
    """Return Alembic's configuration, built in code: there is no alembic.ini.

    The migrations (migrations/env.py) run on `connection`; Alembic prints to `stdout`.
    """
    config = Config(stdout=stdout if stdout is not None else io.StringIO())
    config.set_main_option("script_location", MIGRATIONS_DIR)
    # A revision's file is named by its id alone, e.g. versions/0002_add_holds.py.
    config.set_main_option("file_template", "%%(rev)s")
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def outside_transaction(connection: Connection, *statements: str) -> None:
    """Run `statements` on `connection` once the migration's transaction has committed.

    For the statements a transaction refuses (SQLite's VACUUM). They run in the same
    process, still under the migration lock; if the transaction fails, they never run.
    """
    connection.info.setdefault(_AFTER_COMMIT, []).extend(statements)


def _run_after_commit(connection: Connection) -> None:
    statements: list[str] = connection.info.pop(_AFTER_COMMIT, [])
    for statement in statements:
        connection.exec_driver_sql(statement)
        connection.commit()


def _revision(connection: Connection) -> str | None:
    return MigrationContext.configure(connection).get_current_revision()


def _sqlite_pragmas(busy_timeout_ms: int) -> Callable[[Any, Any], None]:
    def set_pragmas(dbapi_connection: Any, _record: Any) -> None:
        # WAL lets readers run beside the writer; synchronous=FULL makes an acknowledged
        # deletion survive power loss; busy_timeout makes concurrent writers queue, not
        # fail, for up to DB_LOCK_TIMEOUT_MS (then "database is locked": a 503).
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    return set_pragmas


def make_engine(
    url: str,
    *,
    lock_timeout_ms: int = LOCK_TIMEOUT_MS,
    statement_timeout_ms: int = STATEMENT_TIMEOUT_MS,
) -> Engine:
    """Create an engine whose every connection waits on a lock or a statement only so long.

    For a SQLite file, create its folder and set its pragmas (the busy timeout is
    `lock_timeout_ms`); on PostgreSQL every session gets `lock_timeout` and
    `statement_timeout`. A pool checkout waits no longer than the lock timeout either.
    """
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            os.makedirs(os.path.dirname(os.path.abspath(parsed.database)), exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": lock_timeout_ms / 1000})
        event.listen(engine, "connect", _sqlite_pragmas(lock_timeout_ms))
        return engine
    connect_args: dict[str, Any] = {}
    if parsed.get_backend_name() == "postgresql":
        # Added to the URL's own `options` (e.g. a search_path), which connect_args replaces.
        given = parsed.query.get("options", "")
        options = [*([given] if isinstance(given, str) else given)]
        options.append(f"-c lock_timeout={int(lock_timeout_ms)}")
        options.append(f"-c statement_timeout={int(statement_timeout_ms)}")
        connect_args["options"] = " ".join(option for option in options if option)
        parsed = parsed.difference_update_query(["options"])
    return create_engine(
        parsed,
        pool_pre_ping=True,
        pool_size=10,
        max_overflow=20,
        pool_timeout=max(lock_timeout_ms, 1) / 1000,
        connect_args=connect_args,
    )


def _is_unavailable(error: BaseException) -> bool:
    # OperationalError covers the connection refused or cut, and the timeouts: psycopg's
    # LockNotAvailable (lock_timeout) and QueryCanceled (statement_timeout) are
    # OperationalErrors, as is SQLite's "database is locked" (busy timeout); a pool
    # checkout that timed out is SQLAlchemy's own TimeoutError.
    return isinstance(error, (OperationalError, PoolTimeout)) or (
        isinstance(error, DBAPIError) and error.connection_invalidated
    )


def connection_lost(error: BaseException) -> bool:
    """Whether `error` says the connection was lost (the outcome of a COMMIT is unknown)."""
    return isinstance(error, DBAPIError) and error.connection_invalidated


class TransactionGate:
    """Open transactions hold it shared; a pause of the whole process holds it alone.

    The embedded vector engine's vacuum holds the GIL for its whole run, freezing every
    thread: one frozen inside a transaction would keep its database locks, and the requests
    waiting for them would time out (503). A pause therefore waits for the open
    transactions to end and holds new ones back until it is over. Re-entrant per thread, so
    a transaction opened inside another never waits for a pause that waits for it.
    """

    def __init__(self) -> None:
        self._condition = threading.Condition()
        self._open = 0
        self._pausing = False
        self._mine = threading.local()

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """Hold the gate shared for one transaction (waits while a pause runs)."""
        depth = getattr(self._mine, "depth", 0)
        if not depth:
            with self._condition:
                self._condition.wait_for(lambda: not self._pausing)
                self._open += 1
        self._mine.depth = depth + 1
        try:
            yield
        finally:
            self._mine.depth = depth
            if not depth:
                with self._condition:
                    self._open -= 1
                    self._condition.notify_all()

    @contextmanager
    def paused(self, timeout: float) -> Iterator[bool]:
        """Hold new transactions back and wait up to `timeout` s for the open ones to end.

        Yields whether they all ended; if not, the pause is over at once (yields False).
        """
        deadline = time.monotonic() + timeout
        with self._condition:
            self._condition.wait_for(lambda: not self._pausing)
            self._pausing = True
            drained = self._condition.wait_for(
                lambda: self._open == 0, max(0.0, deadline - time.monotonic())
            )
            if not drained:
                self._pausing = False
                self._condition.notify_all()
        if not drained:
            yield False
            return
        try:
            yield True
        finally:
            with self._condition:
                self._pausing = False
                self._condition.notify_all()


class UnitOfWork:
    """One transaction: `commit()` makes it count, leaving the block otherwise rolls back."""

    def __init__(self, sessions: sessionmaker[Session], gate: TransactionGate) -> None:
        self._sessions = sessions
        self._gate = gate.transaction()
        self.session: Session

    def __enter__(self) -> UnitOfWork:
        self._gate.__enter__()
        try:
            self.session = self._sessions()
        except BaseException:
            self._gate.__exit__(None, None, None)
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            self.session.close()  # rolls back whatever was not committed
        except DBAPIError:
            pass  # the connection is gone; the original error says why
        finally:
            self._gate.__exit__(None, None, None)
        if exc is not None and _is_unavailable(exc):
            raise DatabaseUnavailable(str(exc).splitlines()[0]) from exc

    def commit(self) -> None:
        """Commit the transaction; if the commit fails, throw its connection away."""
        connection = self.session.connection()
        try:
            self.session.commit()
        except BaseException:
            # A failed COMMIT can leave the driver's transaction open (SQLite keeps it after
            # SQLITE_BUSY or an I/O error), while SQLAlchemy's pool, taking the transaction
            # for ended, would hand the connection on without a rollback: the next commit on
            # it would then apply work whose caller was told nothing changed. Closing the
            # connection discards that transaction.
            connection.invalidate()
            raise


class Database:
    """The SQL store: an engine and a session factory."""

    def __init__(
        self,
        url: str,
        *,
        lock_timeout_ms: int = LOCK_TIMEOUT_MS,
        statement_timeout_ms: int = STATEMENT_TIMEOUT_MS,
    ) -> None:
        self.url = url
        self._lock_timeout_ms = lock_timeout_ms
        self.engine = make_engine(
            url, lock_timeout_ms=lock_timeout_ms, statement_timeout_ms=statement_timeout_ms
        )
        self.sessions = sessionmaker(self.engine, expire_on_commit=False)
        # Held by every unit of work; the vector vacuum pauses transactions with it.
        self.gate = TransactionGate()

    @property
    def dialect(self) -> str:
        """Return the backend name, e.g. `sqlite` or `postgresql`."""
        return self.engine.dialect.name

    def unit_of_work(self) -> UnitOfWork:
        """Start a unit of work."""
        return UnitOfWork(self.sessions, self.gate)

    def upgrade_schema(self) -> SchemaChange:
        """Migrate the schema to the newest revision (head), one process at a time.

        Tables made before migrations (by release 0.1.0's `create_all`) are stamped at the
        first revision, which is exactly their schema, and upgraded from there.
        """

        def upgrade(connection: Connection) -> SchemaChange:
            before, stamped = self._adopt(connection)
            command.upgrade(alembic_config(connection), "head")
            return SchemaChange(before, _revision(connection), stamped)

        return self._migrate(upgrade)

    def downgrade_schema(self, revision: str) -> SchemaChange:
        """Migrate the schema down to `revision` (`base`: no tables), one process at a time."""

        def downgrade(connection: Connection) -> SchemaChange:
            before, stamped = self._adopt(connection)
            command.downgrade(alembic_config(connection), revision)
            return SchemaChange(before, _revision(connection), stamped)

        return self._migrate(downgrade)

    def describe_revision(self) -> str:
        """Return the revision as `alembic current` prints it, e.g. `0001_initial (head)`.

        Empty when the database has no revision (empty, or made before migrations).
        """

        def current(connection: Connection) -> str:
            out = io.StringIO()
            command.current(alembic_config(connection, out))
            return out.getvalue().strip()

        return self._guarded(lambda: self._on_connection(current))

    def _adopt(self, connection: Connection) -> tuple[str | None, bool]:
        """Stamp the tables release 0.1.0 made; return the revision now and whether it stamped."""
        tables = set(inspect(connection).get_table_names())
        if _VERSION_TABLE in tables:
            return _revision(connection), False
        found = tables & _FIRST_TABLES
        if not found:
            return None, False
        if found != _FIRST_TABLES:
            missing = ", ".join(sorted(_FIRST_TABLES - found))
            raise SchemaError(
                f"the database holds some of wickson-batch's tables but not {missing}, and no "
                f"{_VERSION_TABLE} table: it was not made by wickson-batch; nothing was changed"
            )
        command.stamp(alembic_config(connection), FIRST_REVISION)
        return FIRST_REVISION, True

    def _migrate(self, step: Callable[[Connection], T]) -> T:
        """Run `step` in one transaction on a connection, holding the migration lock."""

        def locked() -> T:
            with self._file_lock(), self.engine.connect() as connection:
                self._untimed(connection)
                try:
                    with self._advisory_lock(connection):
                        try:
                            with connection.begin():
                                result = step(connection)
                            _run_after_commit(connection)
                        finally:
                            connection.info.pop(_AFTER_COMMIT, None)
                        return result
                finally:
                    if self.dialect == "postgresql":
                        connection.invalidate()  # not back to the pool without its timeouts

        return self._guarded(locked)

    def _untimed(self, connection: Connection) -> None:
        """Lift the request timeouts on `connection`: a migration may wait and run long."""
        if self.dialect != "postgresql":
            return
        connection.execute(text("SET lock_timeout = 0"))
        connection.execute(text("SET statement_timeout = 0"))
        connection.commit()

    def _on_connection(self, step: Callable[[Connection], T]) -> T:
        with self.engine.connect() as connection:
            return step(connection)

    def _guarded(self, run: Callable[[], T]) -> T:
        try:
            return run()
        except DBAPIError as error:
            if _is_unavailable(error):
                raise DatabaseUnavailable(str(error).splitlines()[0]) from error
            raise
        except CommandError as error:
            raise SchemaError(str(error)) from error

    @contextmanager
    def _file_lock(self) -> Iterator[None]:
        """For a SQLite file, hold an exclusive flock on the file beside it; else nothing."""
        parsed = make_url(self.url)
        path = parsed.database
        if parsed.get_backend_name() != "sqlite" or not path or path == ":memory:":
            yield
            return
        fd = os.open(os.path.abspath(path) + MIGRATE_LOCK_SUFFIX, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)  # waits for the process that migrates now
            yield
        finally:
            os.close(fd)  # releases the lock

    @contextmanager
    def _advisory_lock(self, connection: Connection) -> Iterator[None]:
        """On PostgreSQL, hold the session advisory lock `_LOCK` on `connection`.

        Several workers (or hosts) start at once: one migrates, the others wait for it here
        and then find the schema at head.
        """
        if self.dialect != "postgresql":
            yield
            return
        connection.execute(text("SELECT pg_advisory_lock(:key)"), {"key": _LOCK})
        connection.commit()
        try:
            yield
        finally:
            try:
                connection.rollback()
                connection.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": _LOCK})
                connection.commit()
            except DBAPIError:
                pass  # the connection is gone, and with it the lock; the original error says why

    def ping(self, timeout_ms: int = PING_TIMEOUT_MS) -> None:
        """Raise DatabaseUnavailable unless the database answers a query within `timeout_ms`.

        On PostgreSQL the ping reads the media table under a local lock and statement
        timeout, so a lock held on it (or a server too slow to answer) makes it fail; on
        SQLite it reads the schema under a short busy timeout.
        """
        try:
            with self.engine.connect() as connection:
                if self.dialect == "postgresql":
                    with connection.begin():
                        for name in ("statement_timeout", "lock_timeout"):
                            connection.execute(
                                text("SELECT set_config(:name, :value, true)"),
                                {"name": name, "value": str(int(timeout_ms))},
                            )
                        connection.execute(text("SELECT 1 FROM media LIMIT 1"))
                elif self.dialect == "sqlite":
                    connection.exec_driver_sql(f"PRAGMA busy_timeout={int(timeout_ms)}")
                    try:
                        connection.execute(text("SELECT 1 FROM media LIMIT 1"))
                    finally:
                        connection.exec_driver_sql(f"PRAGMA busy_timeout={self._lock_timeout_ms}")
                else:
                    connection.execute(text("SELECT 1"))
        except (DBAPIError, PoolTimeout) as error:
            raise DatabaseUnavailable(str(error).splitlines()[0]) from error

    def warn_if_unsafe(self) -> None:
        """Log `database.fsync_off` when PostgreSQL runs with fsync = off."""
        if self.dialect != "postgresql":
            return
        with self.engine.connect() as connection:
            fsync = connection.execute(text("SHOW fsync")).scalar()
        if str(fsync).lower() == "off":
            log.warning(
                "database.fsync_off",
                detail="PostgreSQL runs with fsync = off: an acknowledged deletion can be "
                "lost when the database host crashes",
            )

    def reclaim_pages(self, step_pages: int = RECLAIM_STEP_PAGES) -> int:
        """Give SQLite's free pages back to the filesystem; return how many.

        Only a SQLite file in incremental auto-vacuum mode (set by revision
        0004_sqlite_incremental_vacuum) has pages to give; PostgreSQL's autovacuum does
        this itself. The pages go in short steps, then a passive checkpoint lets the file
        shrink without waiting for readers.
        """
        if self.dialect != "sqlite":
            return 0
        freed = 0
        raw = self.engine.raw_connection()
        try:
            sqlite: Any = raw.driver_connection
            # A read first: the pragma answers from the header as this connection last read
            # it, which a migration's VACUUM on another connection may have changed since.
            sqlite.execute("SELECT count(*) FROM sqlite_master").fetchone()
            if sqlite.execute("PRAGMA auto_vacuum").fetchone()[0] != SQLITE_INCREMENTAL_VACUUM:
                return 0
            while free := int(sqlite.execute("PRAGMA freelist_count").fetchone()[0]):
                pages = min(free, step_pages)
                # Not execute(): the sqlite3 module steps a statement without result columns
                # once, and incremental_vacuum frees one page per step. A script runs it out.
                sqlite.executescript(f"PRAGMA incremental_vacuum({pages});")
                freed += pages
            if freed:
                sqlite.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
        finally:
            raw.close()
        return freed

    def disk_bytes(self) -> dict[str, int] | None:
        """Return the bytes on disk of a SQLite file and its WAL; None for a server database."""
        parsed = make_url(self.url)
        if parsed.get_backend_name() != "sqlite" or not parsed.database:
            return None
        if parsed.database == ":memory:":
            return None
        path = os.path.abspath(parsed.database)
        sizes = {}
        for name, file in (("sqlite", path), ("sqlite_wal", f"{path}-wal")):
            try:
                sizes[name] = os.stat(file).st_blocks * 512
            except FileNotFoundError:
                sizes[name] = 0
        return sizes

    def dispose(self) -> None:
        """Close every pooled connection."""
        self.engine.dispose()
