"""Shared fixtures and hooks: an app on real stores in a temp folder, keys, and API callers.

The plain helpers they use live in tests/helpers.py.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from tests import servers
from tests.helpers import ENGINES, Caller, settings_for, stores_of
from wickson_batch import create_app
from wickson_batch.protocol import SCOPES
from wickson_batch.services import keys

# Left out of the server pass, and why: they build their own stores rather than use
# `settings_for`, so a second run would repeat the first.
SERVER_PASS_SKIPS = {
    "tests/integration/test_crash.py": "runs gunicorn on SQLite and reads the SQLite file",
    "tests/integration/test_job_crash.py": "runs gunicorn on SQLite and reads the SQLite file",
    "tests/integration/test_server.py": "runs gunicorn on the embedded stores, edits SQLite",
    "tests/integration/test_cli.py": "drives the console script on the embedded stores",
    "tests/integration/test_docs_browser.py": "renders /docs from a server on embedded stores",
    "tests/integration/test_vector_index.py": "tests the vector adapters alone, no SQL",
    "tests/integration/test_workers.py": "runs its own gunicorn on PostgreSQL and Redis",
    "tests/integration/test_client.py": "runs gunicorn on the embedded stores, reads SQLite",
    "tests/integration/test_observability.py": "runs gunicorn on the embedded stores",
    "tests/integration/test_bench_smoke.py": "benchmarks the embedded stores",
    "tests/integration/test_deletion_state_machine.py": "builds its own SQLite and qdrant-edge",
    "tests/integration/test_outages.py::test_redis_hung_then_stopped_limits_from_memory_"
    "and_returns": "runs gunicorn on the embedded stores with its own redis-server",
    "tests/integration/test_outages.py::test_postgresql_restarted_under_load_loses_no_"
    "acknowledged_deletion": "runs gunicorn on a PostgreSQL of its own",
    "tests/integration/test_concurrency.py::test_overlapping_batches_from_processes_"
    "delete_each_id_once": "runs gunicorn on the embedded stores",
    "tests/api/test_auth_and_limits.py::test_the_secret_never_reaches_the_database_files": (
        "reads the SQLite files"
    ),
}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """In the server pass: skip what does not use the servers; without them skip, or fail."""
    if not servers.SERVER_PASS:
        return
    missing = servers.unavailable_reason()
    if missing and servers.in_ci():
        pytest.exit(f"{missing} (CI=true: a missing server is a failure)", returncode=1)
    for item in items:
        node = item.nodeid.split("[")[0]  # without the parameters
        for prefix, reason in SERVER_PASS_SKIPS.items():
            if node == prefix or node.startswith(prefix + "::"):
                item.add_marker(pytest.mark.skip(reason=f"not in the server pass: {reason}"))
        if missing:
            item.add_marker(pytest.mark.skip(reason=missing))


@pytest.fixture(scope="session", autouse=True)
def _server_databases() -> Iterator[None]:
    yield
    servers.drop_databases()


@pytest.fixture(params=ENGINES)
def engine(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def settings(tmp_path: Path, engine: str) -> dict[str, Any]:
    return settings_for(tmp_path, engine)


@pytest.fixture
def app(settings: dict[str, Any]) -> Iterator[Flask]:
    app = create_app(settings)
    yield app
    stores_of(app).close()


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


@pytest.fixture
def make_key(app: Flask) -> Callable[..., str]:
    """Create an API key and return its secret."""

    def make(
        owner: str = "alice", scopes: Sequence[str] = SCOPES, rate_limit: str | None = None
    ) -> str:
        _, secret = keys.create_key(
            stores_of(app).db, owner=owner, scopes=scopes, rate_limit=rate_limit
        )
        return secret

    return make


@pytest.fixture
def alice(app: Flask, client: FlaskClient, make_key: Callable[..., str]) -> Caller:
    return Caller(client, make_key("alice"), app)


@pytest.fixture
def bob(app: Flask, client: FlaskClient, make_key: Callable[..., str]) -> Caller:
    return Caller(client, make_key("bob"), app)
