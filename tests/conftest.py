"""Shared fixtures: an app on real stores in a temp folder, keys, and API callers."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from tests import servers
from wickson_batch import create_app
from wickson_batch.api.context import SETTINGS_EXTENSION, STORES_EXTENSION
from wickson_batch.config import Settings
from wickson_batch.protocol import SCOPES
from wickson_batch.services import keys
from wickson_batch.services.stores import Stores

# Every API test runs on both vector engines: embedded qdrant-edge, and qdrant-client's
# local mode standing in for a Qdrant server (it makes the same client calls). The server
# pass (WICKSON_TEST_BACKEND=server: PostgreSQL and Redis) uses the stand-in only: with a
# server database, production runs a Qdrant server too.
ENGINES = ("qdrant-local",) if servers.SERVER_PASS else ("edge", "qdrant-local")

# Left out of the server pass, and why: they build their own stores rather than use
# `settings_for`, so a second run would repeat the first.
SERVER_PASS_SKIPS = {
    "tests/integration/test_crash.py": "runs gunicorn on SQLite and reads the SQLite file",
    "tests/integration/test_server.py": "runs gunicorn on the embedded stores, edits SQLite",
    "tests/integration/test_cli.py": "drives the console script on the embedded stores",
    "tests/integration/test_docs_browser.py": "renders /docs from a server on embedded stores",
    "tests/integration/test_vector_index.py": "tests the vector adapters alone, no SQL",
    "tests/integration/test_workers.py": "runs its own gunicorn on PostgreSQL and Redis",
    "tests/integration/test_client.py": "runs gunicorn on the embedded stores, reads SQLite",
    "tests/integration/test_observability.py": "runs gunicorn on the embedded stores",
    "tests/integration/test_bench_smoke.py": "benchmarks the embedded stores",
    "tests/integration/test_deletion_state_machine.py": "builds its own SQLite and qdrant-edge",
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


def settings_for(tmp_path: Path, engine: str, **overrides: Any) -> dict[str, Any]:
    """Return test settings with every store under `tmp_path`."""
    settings: dict[str, Any] = {
        "TESTING": True,
        "DATA_DIR": str(tmp_path / "var"),
        "DATABASE_URL": f"sqlite:///{tmp_path / 'wickson.db'}",
        "QDRANT_URL": ":memory:" if engine == "qdrant-local" else None,
        "RATELIMIT_STORAGE_URI": "memory://",
        "RATE_LIMIT_DEFAULT": "10000/minute",
    }
    if servers.SERVER_PASS:
        settings.update(servers.server_settings(tmp_path))
    settings.update(overrides)
    return settings


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


def stores_of(app: Flask) -> Stores:
    """Return the stores an app holds."""
    held: Stores = app.extensions[STORES_EXTENSION]
    return held


def settings_of(app: Flask) -> Settings:
    """Return the settings an app was built with."""
    found: Settings = app.extensions[SETTINGS_EXTENSION]
    return found


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


def vector(dim: int, seed: int) -> list[float]:
    """Return a distinct non-zero vector for a seed."""
    return [float((seed * 7 + i * 3) % 11 + 1) for i in range(dim)]


@dataclass
class Caller:
    """An API client holding one key."""

    client: FlaskClient
    key: str
    app: Flask

    @property
    def headers(self) -> dict[str, str]:
        return {"X-Api-Key": self.key}

    def delete_batch(self, media_ids: Any, reason: str | None = None, **extra: Any) -> TestResponse:
        payload: dict[str, Any] = {"media_ids": media_ids, **extra}
        if reason is not None:
            payload["reason"] = reason
        return self.client.delete("/v1/media/batch", json=payload, headers=self.headers)

    def create(self, hd: int = 1, ld: int = 1, seed: int = 0, **extra: Any) -> str:
        dims = settings_of(self.app).hd_dim, settings_of(self.app).ld_dim
        payload = {
            "hd_vectors": [vector(dims[0], seed + i) for i in range(hd)],
            "ld_vectors": [vector(dims[1], seed + i) for i in range(ld)],
            **extra,
        }
        response = self.client.post("/v1/media", json=payload, headers=self.headers)
        assert response.status_code == 201, response.get_json()
        return str(body(response)["data"]["media_id"])

    def get(self, media_id: str) -> TestResponse:
        return self.client.get(f"/v1/media/{media_id}", headers=self.headers)

    def search(self, vec: list[float], space: str = "hd", limit: int = 10) -> TestResponse:
        payload = {"vector": vec, "space": space, "limit": limit}
        return self.client.post("/v1/media/search", json=payload, headers=self.headers)


@pytest.fixture
def alice(app: Flask, client: FlaskClient, make_key: Callable[..., str]) -> Caller:
    return Caller(client, make_key("alice"), app)


@pytest.fixture
def bob(app: Flask, client: FlaskClient, make_key: Callable[..., str]) -> Caller:
    return Caller(client, make_key("bob"), app)


def unknown_id() -> str:
    """Return a well-formed id that no media has."""
    return f"vec-{uuid.uuid4().hex}"


def body(response: TestResponse) -> dict[str, Any]:
    """Return a response's JSON object body."""
    data = response.get_json()
    assert isinstance(data, dict), response.data[:200]
    return data
