"""Logs: JSON lines carrying the request id; keys and vectors never appear."""

from __future__ import annotations

import json
import logging
import os
import sys
import threading
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog
from flask import Flask

from tests.helpers import Caller, settings_for, stores_of, unknown_id
from wickson_batch import create_app
from wickson_batch.logs import configure_logging
from wickson_batch.services import keys


@pytest.fixture
def logged_app(tmp_path: Path, engine: str) -> Iterator[Flask]:
    app = create_app(settings_for(tmp_path, engine, LOG_LEVEL="INFO", LOG_FORMAT="json"))
    yield app
    stores_of(app).close()


@pytest.fixture
def caller(logged_app: Flask) -> Caller:
    _, secret = keys.create_key(stores_of(logged_app).db, owner="alice")
    return Caller(logged_app.test_client(), secret, logged_app)


def lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def test_each_request_writes_one_json_access_line(
    caller: Caller, capsys: pytest.CaptureFixture[str]
) -> None:
    capsys.readouterr()
    response = caller.get(unknown_id())

    access = [e for e in lines(capsys.readouterr().err) if e["event"] == "http.request"]

    assert len(access) == 1
    entry = access[0]
    assert entry["request_id"] == response.headers["X-Request-ID"]
    assert entry["pid"] == os.getpid()  # which worker process served it
    assert (entry["method"], entry["route"], entry["status"]) == (
        "GET",
        "/v1/media/<media_id>",
        404,
    )
    assert isinstance(entry["key_id"], int)
    assert isinstance(entry["duration_ms"], float)


def test_a_batch_logs_its_operation_with_counts_and_reason(
    caller: Caller, capsys: pytest.CaptureFixture[str]
) -> None:
    media_id = caller.create(hd=2, ld=1)
    capsys.readouterr()

    response = caller.delete_batch([media_id, unknown_id()], reason="outdated_content")

    events = [e for e in lines(capsys.readouterr().err) if e["event"] == "media.batch_delete"]
    assert len(events) == 1
    event = events[0]
    assert event["operation_id"] == response.get_json()["metadata"]["operation_id"]
    assert (event["deleted"], event["failed"], event["hd_vectors"], event["ld_vectors"]) == (
        1,
        1,
        2,
        1,
    )
    assert event["reason"] == "outdated_content"
    assert event["request_id"] == response.headers["X-Request-ID"]


def test_keys_and_vectors_never_reach_the_logs(
    caller: Caller, capsys: pytest.CaptureFixture[str]
) -> None:
    capsys.readouterr()
    caller.create(hd=1, ld=1, seed=12345)
    caller.client.get("/v1/media/x", headers={"X-Api-Key": "wkb_not-a-real-key-but-secret"})

    logged = capsys.readouterr().err

    assert caller.key not in logged
    assert "wkb_not-a-real-key-but-secret" not in logged
    assert 'hd_vectors": [[' not in logged and "12345" not in logged


def test_lines_from_many_threads_never_interleave(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("INFO", "json")
    structured = structlog.get_logger("wickson_batch")
    library = logging.getLogger("some.library")
    start = threading.Barrier(8)

    def write(n: int) -> None:
        start.wait()
        for i in range(300):
            if (n + i) % 2:
                structured.info("app.event", thread=n, i=i, padding="x" * 200)
            else:
                library.info("library line %s %s %s", n, i, "y" * 200)

    capsys.readouterr()
    threads = [threading.Thread(target=write, args=(n,)) for n in range(8)]
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as possible
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        sys.setswitchinterval(interval)

    entries = lines(capsys.readouterr().err)  # every line parses: none was cut by another

    assert len(entries) == 8 * 300
    assert sum(e["event"] == "app.event" for e in entries) == 4 * 300
    assert all(e.get("logger") == "some.library" for e in entries if e["event"] != "app.event")


def test_python_warnings_are_logged_as_json_lines(capsys: pytest.CaptureFixture[str]) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        configure_logging("INFO", "json")
        capsys.readouterr()
        warnings.warn("an insecure connection", UserWarning, stacklevel=1)

        entries = lines(capsys.readouterr().err)

    assert len(entries) == 1
    assert entries[0]["logger"] == "py.warnings"
    assert entries[0]["level"] == "warning"
    assert "UserWarning: an insecure connection" in entries[0]["event"]
