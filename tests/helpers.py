"""Plain test helpers, for the tests and for the fixtures of conftest.py.

Settings on real stores in a temp folder, an API caller, small values, and the checks of an
error envelope and of what a request changed.
"""

from __future__ import annotations

import dataclasses
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select
from werkzeug.test import TestResponse

from tests import servers
from wickson_batch.api.context import SETTINGS_EXTENSION, STORES_EXTENSION
from wickson_batch.config import Settings
from wickson_batch.models import CleanupTask, DeletionJob, DeletionJobItem, Media, Operation
from wickson_batch.services.job_runner import JobRunner
from wickson_batch.services.stores import Stores

# Every API test runs on both vector engines: embedded qdrant-edge, and qdrant-client's
# local mode standing in for a Qdrant server (it makes the same client calls). The server
# pass (WICKSON_TEST_BACKEND=server: PostgreSQL and Redis) uses the stand-in only: with a
# server database, production runs a Qdrant server too.
ENGINES = ("qdrant-local",) if servers.SERVER_PASS else ("edge", "qdrant-local")


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


def stores_of(app: Flask) -> Stores:
    """Return the stores an app holds."""
    held: Stores = app.extensions[STORES_EXTENSION]
    return held


def settings_of(app: Flask) -> Settings:
    """Return the settings an app was built with."""
    found: Settings = app.extensions[SETTINGS_EXTENSION]
    return found


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


def unknown_id() -> str:
    """Return a well-formed id that no media has."""
    return f"vec-{uuid.uuid4().hex}"


def body(response: TestResponse) -> dict[str, Any]:
    """Return a response's JSON object body."""
    data = response.get_json()
    assert isinstance(data, dict), response.data[:200]
    return data


Snapshot = dict[str, Any]


def assert_error(
    response: TestResponse, status: int, code: str, message: str | None = None
) -> dict[str, Any]:
    """Check an error response's status, envelope and request id; return its other details."""
    assert response.status_code == status, response.data[:300]
    assert response.headers["Content-Type"] == "application/json"
    payload = body(response)
    assert set(payload) == {"success", "message", "error"}
    assert payload["success"] is False
    assert isinstance(payload["message"], str) and payload["message"]
    if message is not None:
        assert payload["message"] == message
    assert set(payload["error"]) == {"code", "details"}
    assert payload["error"]["code"] == code
    details = dict(payload["error"]["details"])
    assert details.pop("request_id") == response.headers["X-Request-ID"]
    return details


def snapshot(app: Flask) -> Snapshot:
    """Return everything a request could change: rows of every table and points of both spaces."""
    held = stores_of(app)
    with held.db.unit_of_work() as uow:
        rows = uow.session.execute(select(Media.id, Media.owner, Media.state))
        media = sorted(tuple(row) for row in rows)
        operations = uow.session.scalar(select(func.count()).select_from(Operation))
        tasks = uow.session.scalar(select(func.count()).select_from(CleanupTask))
        jobs = uow.session.scalar(select(func.count()).select_from(DeletionJob))
        items = uow.session.scalar(select(func.count()).select_from(DeletionJobItem))
    return {
        "media": media,
        "operations": operations,
        "cleanup_tasks": tasks,
        "deletion_jobs": jobs,
        "deletion_job_items": items,
        "hd_points": held.vectors.count("hd"),
        "ld_points": held.vectors.count("ld"),
    }


def job_runner(app: Flask, **settings: Any) -> JobRunner:
    """Return a deletion-job runner over an app's stores; `settings` override its JOB_* values
    (lower-case names without the prefix: `chunk_size=10`)."""
    config = dataclasses.replace(
        settings_of(app), **{f"job_{name}": value for name, value in settings.items()}
    )
    return stores_of(app).make_job_runner(config)


def run_jobs(app: Flask, **settings: Any) -> list[str]:
    """Run every runnable deletion job to its end, here and now; return their ids in order."""
    runner = job_runner(app, **settings)
    ran = []
    while (job_id := runner.run_once()) is not None:
        ran.append(job_id)
    return ran
