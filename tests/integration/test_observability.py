"""Real gunicorn, as `make run` starts it: /metrics in multiprocess mode, every log line JSON."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import multiprocess
from prometheus_client.parser import text_string_to_metric_families

from tests.gunicorn import BIN, ROOT, Server, free_port
from wickson_batch.db import Database
from wickson_batch.models import CleanupTask

pytestmark = pytest.mark.slow

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


class LoggedServer(Server):
    """A Server whose stderr goes to a file, to be read line by line afterwards."""

    log_path: Path

    def start(self, extra: list[str] | None = None) -> None:
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [str(BIN / "gunicorn"), "--config", "gunicorn.conf.py", *(extra or []), "wsgi:app"],
                env=self.env,
                cwd=ROOT,
                stdout=subprocess.DEVNULL,
                stderr=log,
                start_new_session=True,
            )
        self.wait_ready()

    def wait_ready(self) -> None:
        assert self.process is not None
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(self.log_path.read_text())
            try:
                if self.request("GET", "/readyz")[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.1)
        raise AssertionError("server did not become ready")

    def scrape(self) -> Samples:
        with urllib.request.urlopen(self.url + "/metrics", timeout=10) as response:
            assert response.status == 200
            text = response.read().decode()
        return {
            (sample.name, frozenset(sample.labels.items())): sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
        }

    def log_lines(self) -> list[dict[str, Any]]:
        """Every stderr line, each parsed as JSON (a line that is not JSON fails here)."""
        lines = [line for line in self.log_path.read_text().splitlines() if line.strip()]
        return [json.loads(line) for line in lines]


@pytest.fixture
def server(tmp_path: Path) -> Iterator[LoggedServer]:
    port = free_port()
    (tmp_path / "tmp").mkdir()
    env = {
        **os.environ,
        "DATA_DIR": str(tmp_path / "var"),
        "DATABASE_URL": "",
        "QDRANT_URL": "",
        "HOST": "127.0.0.1",
        "PORT": str(port),
        "HD_DIM": "8",
        "LD_DIM": "4",
        "LOG_LEVEL": "INFO",
        "LOG_FORMAT": "",  # the default
        "PROMETHEUS_MULTIPROC_DIR": "",
        "TMPDIR": str(tmp_path / "tmp"),  # where gunicorn.conf.py makes its metrics folder
        "RECONCILE_GRACE_SECONDS": "3600",  # a cleanup task we add stays pending
    }
    running = LoggedServer(f"http://127.0.0.1:{port}", env)
    running.log_path = tmp_path / "server.log"
    yield running
    if running.process is not None:
        running.kill()


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, frozenset(labels.items()))]


def requests_total(samples: Samples, route: str, method: str, status: str) -> float:
    labels = {"route": route, "method": method, "status": status}
    return value(samples, "wickson_http_requests_total", **labels)


def test_metrics_and_json_logs_under_gunicorn(server: LoggedServer, tmp_path: Path) -> None:
    secret = server.cli("keys", "create", "--owner", "acme").stdout.strip()
    seeded = server.cli("seed", "--owner", "acme", "--count", "5", "--hd-per-media", "2")
    ids = seeded.stdout.split()
    # Folders left by masters that were killed (no on_exit hook ran), and one that runs.
    gone = subprocess.Popen(["true"])
    gone.wait()
    left_by_dead = tmp_path / "tmp" / f"wickson-metrics-{gone.pid}-abc123"
    left_by_dead.mkdir()
    (left_by_dead / "counter_1.db").write_bytes(b"\0" * 64)
    running = tmp_path / "tmp" / f"wickson-metrics-{os.getpid()}-def456"
    running.mkdir()
    server.start()
    assert not left_by_dead.exists() and running.is_dir()
    running.rmdir()
    metrics_dirs = list((tmp_path / "tmp").glob("wickson-metrics-*"))
    assert len(metrics_dirs) == 1  # made by gunicorn.conf.py, before the worker started
    assert server.process is not None
    assert metrics_dirs[0].name.startswith(f"wickson-metrics-{server.process.pid}-")

    first = server.request(
        "DELETE",
        "/v1/media/batch",
        {"media_ids": [ids[0], ids[1], "vec-x"], "reason": "r1"},
        secret,
    )
    second = server.request(
        "POST", "/v1/media/batch/delete", {"media_ids": [ids[2], ids[0]]}, secret
    )
    refused = server.request("DELETE", "/v1/media/batch", {"media_ids": []}, secret)
    missing = server.request("GET", "/v1/media/vec-nope", key=secret)
    assert [first[0], second[0], refused[0], missing[0]] == [200, 200, 400, 404]
    # A cleanup task the reconciler must leave (younger than its grace): the gauge reads it.
    db = Database(f"sqlite:///{tmp_path / 'var' / 'wickson.db'}")
    with db.unit_of_work() as uow:
        uow.session.add(
            CleanupTask(media_id="vec-gone", operation_id="op-x", hd_count=1, ld_count=1)
        )
        uow.commit()
    db.dispose()

    samples = server.scrape()

    assert requests_total(samples, "/v1/media/batch", "DELETE", "200") == 1
    assert requests_total(samples, "/v1/media/batch", "DELETE", "400") == 1
    assert requests_total(samples, "/v1/media/batch/delete", "POST", "200") == 1
    assert requests_total(samples, "/v1/media/<media_id>", "GET", "404") == 1
    assert value(samples, "wickson_media_deleted_total") == 3
    assert value(samples, "wickson_vectors_deleted_total", space="hd") == 6
    assert value(samples, "wickson_vectors_deleted_total", space="ld") == 3
    assert value(samples, "wickson_batch_failures_total", reason="NOT_FOUND") == 2
    assert value(samples, "wickson_batch_size_count") == 2
    assert value(samples, "wickson_batch_size_sum") == 5
    assert value(samples, "wickson_batch_processing_seconds_count") == 2
    assert value(samples, "wickson_cleanup_tasks_pending") == 1

    # gunicorn replaces a worker that stops: the counts survive it (they are in the files).
    booted = [e["event"] for e in server.log_lines() if e["event"].startswith("Booting worker")]
    assert len(booted) == 1
    os.kill(int(booted[0].rsplit(" ", 1)[1]), signal.SIGTERM)
    time.sleep(0.5)
    server.wait_ready()
    third = server.request("DELETE", "/v1/media/batch", {"media_ids": [ids[3]]}, secret)
    assert third[0] == 200

    after = server.scrape()

    assert value(after, "wickson_media_deleted_total") == 4
    assert requests_total(after, "/v1/media/batch", "DELETE", "200") == 2
    assert value(after, "wickson_batch_size_count") == 3
    assert server.stop() == 0
    assert not metrics_dirs[0].exists()  # ours: removed when the master exits

    entries = server.log_lines()  # every line parses as JSON, gunicorn's included
    gunicorn = [e["event"] for e in entries if e.get("logger") == "gunicorn.error"]
    assert any(re.fullmatch(r"Listening at: http://127\.0\.0\.1:\d+ \(\d+\)", e) for e in gunicorn)
    assert len([e for e in gunicorn if e.startswith("Booting worker with pid: ")]) == 2
    assert all({"level", "timestamp"} <= e.keys() for e in entries)
    access = [e for e in entries if e["event"] == "http.request" and "batch" in e["path"]]
    assert [(e["method"], e["route"], e["status"]) for e in access] == [
        ("DELETE", "/v1/media/batch", 200),
        ("POST", "/v1/media/batch/delete", 200),
        ("DELETE", "/v1/media/batch", 400),
        ("DELETE", "/v1/media/batch", 200),
    ]
    assert [e["request_id"] for e in access[:3]] == [
        r[2]["X-Request-ID"] for r in (first, second, refused)
    ]
    assert all(isinstance(e["duration_ms"], float) and e["key_id"] == 1 for e in access)
    batches = [e for e in entries if e["event"] == "media.batch_delete"]
    assert [
        (e["deleted"], e["failed"], e["hd_vectors"], e["ld_vectors"], e["reason"]) for e in batches
    ] == [(2, 1, 4, 2, "r1"), (1, 1, 2, 1, None), (1, 0, 2, 1, None)]
    assert batches[0]["operation_id"] == first[1]["metadata"]["operation_id"]


def test_a_given_metrics_folder_is_emptied_at_start_and_kept(
    server: LoggedServer, tmp_path: Path
) -> None:
    folder = tmp_path / "prom"
    folder.mkdir()
    stale = folder / "counter_12345.db"  # a previous run's samples would add to this run's
    stale.write_bytes(b"\0" * 64)
    (folder / "notes.txt").write_text("not a sample file")
    server.env["PROMETHEUS_MULTIPROC_DIR"] = str(folder)
    server.env["LOG_LEVEL"] = "verbose"  # not a level: INFO, as the app does
    server.start()

    assert not stale.exists()
    samples = server.scrape()
    assert value(samples, "wickson_media_deleted_total") == 0
    assert server.stop() == 0
    assert (folder / "notes.txt").exists()  # a folder given is kept, with this run's samples
    assert not list((tmp_path / "tmp").glob("wickson-metrics-*"))


def test_a_metrics_folder_holding_other_files_is_refused(
    server: LoggedServer, tmp_path: Path
) -> None:
    data = tmp_path / "var"
    data.mkdir()
    (data / "wickson.db").write_bytes(b"a database, not samples")  # DATA_DIR given by mistake
    server.env["PROMETHEUS_MULTIPROC_DIR"] = str(data)

    with pytest.raises(AssertionError, match="holds other files"):
        server.start()

    assert server.process is not None and server.process.wait(timeout=10) == 1
    server.process = None
    assert (data / "wickson.db").read_bytes() == b"a database, not samples"
    errors = [e for e in server.log_lines() if e["level"] == "error"]
    assert errors[0]["event"] == (
        f"PROMETHEUS_MULTIPROC_DIR={data} holds other files (wickson.db): "
        "give it a folder of its own"
    )


def worker_requests(folder: Path) -> dict[str, float]:
    """API requests each worker counted, read from its own samples file (counter_<pid>.db)."""
    counted: dict[str, float] = {}
    for path in folder.glob("counter_*.db"):
        families = multiprocess.MultiProcessCollector.merge([str(path)])  # type: ignore[no-untyped-call]
        counted[path.stem.split("_")[1]] = sum(
            sample.value
            for family in families
            if family.name == "wickson_http_requests"
            for sample in family.samples
            if sample.name == "wickson_http_requests_total"
            and sample.labels["route"] != "/readyz"  # start() polls it
        )
    return counted


def test_two_workers_samples_add_up_in_any_workers_answer(
    server: LoggedServer, tmp_path: Path
) -> None:
    # Two workers need stores that several processes can share: SQLite (WAL) for the
    # database and, for the vectors, qdrant-client's in-process mode, one per worker. The
    # batches below delete by the database's records, so each worker's own empty vector
    # store does not change their counts.
    folder = tmp_path / "prom"
    server.env.update(
        {"QDRANT_URL": ":memory:", "PROMETHEUS_MULTIPROC_DIR": str(folder), "LOG_LEVEL": "WARNING"}
    )
    secret = server.cli("keys", "create", "--owner", "acme").stdout.strip()
    ids = server.cli(
        "seed", "--owner", "acme", "--count", "4", "--hd-per-media", "2"
    ).stdout.split()
    assert len(ids) == 4
    server.start(extra=["--workers", "2"])

    statuses = [
        server.request("DELETE", "/v1/media/batch", {"media_ids": [media_id, "vec-x"]}, secret)[0]
        for media_id in ids
    ]
    sent = len(statuses)
    # Fresh connections until each worker has answered some (the kernel picks the worker).
    while min(worker_requests(folder).values(), default=0) == 0 and sent < 400:
        assert server.request("GET", "/v1/media/vec-nope", key=secret)[0] == 404
        sent += 1
    per_worker = worker_requests(folder)

    samples = server.scrape()

    assert statuses == [200] * 4
    assert len(per_worker) == 2 and min(per_worker.values()) > 0, per_worker
    total = sum(
        v
        for (name, labels), v in samples.items()
        if name == "wickson_http_requests_total" and ("route", "/readyz") not in labels
    )
    assert total == sent == sum(per_worker.values())
    assert value(samples, "wickson_media_deleted_total") == 4
    assert value(samples, "wickson_vectors_deleted_total", space="hd") == 8
    assert value(samples, "wickson_batch_failures_total", reason="NOT_FOUND") == 4
    assert value(samples, "wickson_batch_size_count") == 4
    assert server.stop() == 0
