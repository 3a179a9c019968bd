"""Engine, sessionmaker, the unit of work (the only place that commits), DatabaseUnavailable."""

from __future__ import annotations

import os
from types import TracebackType
from typing import Any

from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from .models import Base

SQLITE_BUSY_TIMEOUT_MS = 10_000
# The PostgreSQL advisory lock that serialises schema creation across processes.
_LOCK = 0x77696B73  # "wiks"


class DatabaseUnavailable(Exception):
    """The SQL database could not be reached; nothing was changed."""


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # WAL lets readers run beside the writer; synchronous=FULL makes an acknowledged
    # deletion survive power loss; busy_timeout makes concurrent writers queue, not fail.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def make_engine(url: str) -> Engine:
    """Create an engine; for a SQLite file, create its folder and set its pragmas."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            os.makedirs(os.path.dirname(os.path.abspath(parsed.database)), exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000})
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    return create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=20)


def _is_unavailable(error: BaseException) -> bool:
    return isinstance(error, OperationalError) or (
        isinstance(error, DBAPIError) and error.connection_invalidated
    )


class UnitOfWork:
    """One transaction: `commit()` makes it count, leaving the block otherwise rolls back."""

    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self._sessions = sessions
        self.session: Session

    def __enter__(self) -> UnitOfWork:
        self.session = self._sessions()
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

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = make_engine(url)
        self.sessions = sessionmaker(self.engine, expire_on_commit=False)

    @property
    def dialect(self) -> str:
        """Return the backend name, e.g. `sqlite` or `postgresql`."""
        return self.engine.dialect.name

    def unit_of_work(self) -> UnitOfWork:
        """Start a unit of work."""
        return UnitOfWork(self.sessions)

    def create_schema(self) -> None:
        """Create the tables that do not exist yet."""
        try:
            with self.engine.begin() as connection:
                if self.dialect == "postgresql":
                    # Several workers (or hosts) start at once on a fresh database: one creates
                    # the tables, the others wait for it here and then find them.
                    connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _LOCK})
                Base.metadata.create_all(connection)
        except DBAPIError as error:
            if _is_unavailable(error):
                raise DatabaseUnavailable(str(error).splitlines()[0]) from error
            raise

    def ping(self) -> None:
        """Raise DatabaseUnavailable unless the database answers a query."""
        try:
            with self.engine.connect() as connection:
                connection.execute(text("SELECT 1"))
        except DBAPIError as error:
            raise DatabaseUnavailable(str(error).splitlines()[0]) from error

    def dispose(self) -> None:
        """Close every pooled connection."""
        self.engine.dispose()
