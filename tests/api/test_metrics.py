"""GET /metrics: exact counts after known batches, on the real app and real stores."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from flask import Flask
from flask.testing import FlaskClient
from prometheus_client.parser import text_string_to_metric_families

from tests.faults import FlakyVectors
from tests.helpers import Caller, settings_for, stores_of, unknown_id
from wickson_batch import create_app
from wickson_batch.config import env_overlay
from wickson_batch.services.cleanup import drain_cleanup
from wickson_batch.services.vacuum import VacuumPolicy, vacuum_due

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(client: FlaskClient) -> Samples:
    """Return every sample of GET /metrics, keyed by name and labels."""
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.mimetype == "text/plain"
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(response.get_data(as_text=True))
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, frozenset(labels.items()))]


def test_batches_are_counted_exactly(alice: Caller, bob: Caller, client: FlaskClient) -> None:
    a = alice.create(hd=2, ld=1, seed=1)
    b = alice.create(hd=1, ld=3, seed=2)
    c = alice.create(hd=1, ld=0, seed=3)
    foreign = bob.create(hd=1, ld=1, seed=4)

    assert alice.delete_batch([a, b, unknown_id()]).status_code == 200
    assert alice.delete_batch([c, a, foreign, unknown_id()]).status_code == 200
    assert alice.delete_batch([]).status_code == 400  # refused: not a processed batch

    samples = scrape(client)
    assert value(samples, "wickson_media_deleted_total") == 3
    assert value(samples, "wickson_vectors_deleted_total", space="hd") == 4
    assert value(samples, "wickson_vectors_deleted_total", space="ld") == 4
    assert value(samples, "wickson_batch_failures_total", reason="NOT_FOUND") == 4
    assert value(samples, "wickson_cleanup_deferred_total") == 0
    assert value(samples, "wickson_batch_size_count") == 2
    assert value(samples, "wickson_batch_size_sum") == 7
    assert value(samples, "wickson_batch_size_bucket", le="2.0") == 0
    assert value(samples, "wickson_batch_size_bucket", le="5.0") == 2
    assert value(samples, "wickson_batch_processing_seconds_count") == 2
    assert value(samples, "wickson_cleanup_tasks_pending") == 0


def test_requests_are_counted_by_route_template(alice: Caller, client: FlaskClient) -> None:
    media_id = alice.create()
    alice.get(media_id)
    alice.get(unknown_id())
    alice.get(unknown_id())
    alice.delete_batch([media_id])
    client.get("/no/such/path/42")
    client.open("/healthz", method="BREW")

    samples = scrape(client)

    def requests(route: str, method: str, status: str) -> float:
        return value(
            samples, "wickson_http_requests_total", route=route, method=method, status=status
        )

    assert requests("/v1/media", "POST", "201") == 1
    assert requests("/v1/media/<media_id>", "GET", "200") == 1
    assert requests("/v1/media/<media_id>", "GET", "404") == 2
    assert requests("/v1/media/batch", "DELETE", "200") == 1
    assert requests("<unmatched>", "GET", "404") == 1
    assert requests("<unmatched>", "OTHER", "405") == 1  # no rule matched this method
    routes = {
        dict(labels).get("route") for name, labels in samples if name.startswith("wickson_http")
    }
    assert not any(media_id in str(route) for route in routes)  # never a raw path
    assert value(samples, "wickson_http_request_duration_seconds_count", route="/v1/media") == 1


def test_pending_cleanup_is_read_from_the_database(
    alice: Caller, client: FlaskClient, app: Flask
) -> None:
    held = stores_of(app)
    ids = [alice.create(hd=2, ld=1, seed=n) for n in range(3)]
    real = held.vectors
    held.vectors = FlakyVectors(real, spaces=("ld",))

    deleted = alice.delete_batch(ids).get_json()["data"]["deleted"]

    assert deleted["cleanup_pending"] == ids
    samples = scrape(client)
    assert value(samples, "wickson_cleanup_tasks_pending") == 3
    assert value(samples, "wickson_cleanup_deferred_total") == 3
    assert value(samples, "wickson_media_deleted_total") == 3
    assert value(samples, "wickson_vectors_deleted_total", space="hd") == 6
    assert value(samples, "wickson_vectors_deleted_total", space="ld") == 0

    held.vectors = real
    drain_cleanup(held.db, real, grace=timedelta(0))

    assert value(scrape(client), "wickson_cleanup_tasks_pending") == 0


def test_the_vacuum_and_the_bytes_on_disk_are_shown(
    alice: Caller, client: FlaskClient, app: Flask, engine: str
) -> None:
    held = stores_of(app)
    ids = [alice.create(hd=2, ld=1, seed=n) for n in range(3)]
    alice.delete_batch(ids[:2])
    embedded = engine == "edge"

    samples = scrape(client)

    assert value(samples, "wickson_vacuum_runs_total", space="hd") == 0
    pending = {
        dict(labels)["space"]: found
        for (name, labels), found in samples.items()
        if name == "wickson_vacuum_points_pending"
    }
    assert pending == ({"hd": 4, "ld": 2} if embedded else {})  # a Qdrant server: its own
    stores = {
        dict(labels)["store"]
        for (name, labels), _ in samples.items()
        if name == "wickson_store_bytes"
    }
    on_sqlite = held.db.dialect == "sqlite"
    expected = ({"vectors"} if embedded else set()) | (
        {"sqlite", "sqlite_wal"} if on_sqlite else set()
    )
    assert stores == expected
    if on_sqlite:
        assert value(samples, "wickson_store_bytes", store="sqlite") > 0

    policy = VacuumPolicy(threshold=0.2, max_age_seconds=3600)
    for step in vacuum_due(held.vectors, held.db.gate, policy, pause=0):
        for observe in held.vacuum_observers:
            observe(step)
    samples = scrape(client)

    runs = 1 if embedded else 0
    assert value(samples, "wickson_vacuum_runs_total", space="hd") == runs
    assert value(samples, "wickson_vacuum_runs_total", space="ld") == runs
    if embedded:
        assert value(samples, "wickson_vacuum_duration_seconds_count", space="hd") == 1
        assert value(samples, "wickson_vacuum_points_pending", space="hd") == 0


def test_metrics_can_be_switched_off(tmp_path: Path) -> None:
    app = create_app(settings_for(tmp_path, "edge", METRICS_ENABLED=False))
    try:
        client = app.test_client()

        response = client.get("/metrics")

        assert response.status_code == 404
        assert response.get_json()["error"]["code"] == "NOT_FOUND"
        assert "/metrics" not in client.get("/openapi.json").get_json()["paths"]
    finally:
        stores_of(app).close()


def test_metrics_setting_is_read_from_the_environment() -> None:
    assert env_overlay({"METRICS_ENABLED": "false"}) == {"METRICS_ENABLED": False}
    assert env_overlay({"METRICS_ENABLED": "1"}) == {"METRICS_ENABLED": True}
