"""PostgreSQL and Redis for the tests that need real servers (scripts/test-servers starts both).

`WICKSON_TEST_POSTGRES_URL` names a database the tests may create databases from, and
`WICKSON_TEST_REDIS_URL` a Redis database the tests may flush. Without them the tests that
need them skip with the reason; under `CI=true` a missing or unreachable server fails them.
"""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pytest
import redis
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

POSTGRES_ENV = "WICKSON_TEST_POSTGRES_URL"
REDIS_ENV = "WICKSON_TEST_REDIS_URL"
BACKEND_ENV = "WICKSON_TEST_BACKEND"

# `WICKSON_TEST_BACKEND=server`: the API and integration suites run on PostgreSQL (as
# DATABASE_URL) and Redis (as RATELIMIT_STORAGE_URI) instead of SQLite and memory://.
SERVER_PASS = os.environ.get(BACKEND_ENV, "") == "server"


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}


@dataclass(frozen=True)
class ServerUrls:
    postgres: str
    redis: str


@cache
def _probe() -> ServerUrls | str:
    """Return the servers' URLs, or why they cannot be used."""
    postgres, redis_url = os.environ.get(POSTGRES_ENV, ""), os.environ.get(REDIS_ENV, "")
    if not postgres or not redis_url:
        return (
            f"PostgreSQL/Redis not available: set {POSTGRES_ENV} "
            f"(e.g. postgresql+psycopg://postgres@127.0.0.1:5432/wickson_test) and {REDIS_ENV} "
            f'(e.g. redis://127.0.0.1:6379/0), or run `eval "$(scripts/test-servers start)"`'
        )
    try:
        engine = create_engine(postgres)
        try:
            with engine.connect() as connection:
                connection.execute(text("SELECT 1"))
        finally:
            engine.dispose()
    except Exception as error:
        return f"PostgreSQL at {POSTGRES_ENV} not reachable: {str(error).splitlines()[0]}"
    try:
        client = redis.Redis.from_url(redis_url, socket_timeout=5)
        try:
            client.ping()
        finally:
            client.close()
    except Exception as error:
        return f"Redis at {REDIS_ENV} not reachable: {error}"
    return ServerUrls(postgres, redis_url)


def unavailable_reason() -> str | None:
    """Return why the servers cannot be used, or None when both answer."""
    probed = _probe()
    return probed if isinstance(probed, str) else None


def require() -> ServerUrls:
    """Return the servers' URLs; skip the test without them, or fail it under CI=true."""
    probed = _probe()
    if isinstance(probed, str):
        if in_ci():
            pytest.fail(f"{probed} (CI=true: a missing server is a failure)", pytrace=False)
        pytest.skip(probed)
    return probed


class Databases:
    """One PostgreSQL database per test session, one schema in it per test folder."""

    def __init__(self, urls: ServerUrls) -> None:
        self.urls = urls
        self.name = f"wickson_test_{uuid.uuid4().hex[:12]}"
        self._schemas: dict[Path, str] = {}
        admin = create_engine(urls.postgres, isolation_level="AUTOCOMMIT")
        try:
            with admin.connect() as connection:
                connection.execute(text(f'CREATE DATABASE "{self.name}"'))
        finally:
            admin.dispose()
        self.url = make_url(urls.postgres).set(database=self.name)
        self._engine = create_engine(self.url, isolation_level="AUTOCOMMIT")

    def url_for(self, folder: Path) -> str:
        """Return a URL whose tables live in a schema of their own, one per test folder.

        The same folder gives the same schema, as it gives the same SQLite file. A new
        folder (a new test) also starts on an empty Redis database.
        """
        schema = self._schemas.get(folder)
        if schema is None:
            schema = f"t{len(self._schemas)}"
            with self._engine.connect() as connection:
                connection.execute(text(f"CREATE SCHEMA {schema}"))
            self._schemas[folder] = schema
            self.flush_redis()
        url = self.url.update_query_dict({"options": f"-csearch_path={schema}"})
        return url.render_as_string(hide_password=False)

    def flush_redis(self) -> None:
        """Empty the Redis database, so no rate-limit counter crosses from one test to the next."""
        client = redis.Redis.from_url(self.urls.redis)
        try:
            client.flushdb()
        finally:
            client.close()

    def drop(self) -> None:
        """Drop the session's database, closing connections a test left open."""
        self._engine.dispose()
        admin = create_engine(self.urls.postgres, isolation_level="AUTOCOMMIT")
        try:
            with admin.connect() as connection:
                connection.execute(text(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)'))
        finally:
            admin.dispose()


_databases: Databases | None = None


def server_settings(folder: Path) -> dict[str, str]:
    """Return DATABASE_URL and RATELIMIT_STORAGE_URI for a test on the servers."""
    global _databases
    urls = require()
    if _databases is None:
        _databases = Databases(urls)
    return {
        "DATABASE_URL": _databases.url_for(folder),
        "RATELIMIT_STORAGE_URI": urls.redis,
    }


def drop_databases() -> None:
    """Drop what `server_settings` created in this session."""
    global _databases
    if _databases is not None:
        _databases.drop()
        _databases = None
