"""The real thing: gunicorn serving wsgi:app on the embedded stores, driven like the README."""

from __future__ import annotations

import json
import signal
import socket
import sqlite3
import time
from pathlib import Path

import pytest

from tests.gunicorn import Server, server

pytestmark = pytest.mark.slow

__all__ = ["server"]  # the fixture, used by name


def test_quickstart_flow_over_real_http(server: Server) -> None:
    key = server.cli("keys", "create", "--owner", "acme", "--name", "quickstart")
    assert key.returncode == 0, key.stderr
    secret = key.stdout.strip()
    seeded = server.cli("seed", "--owner", "acme", "--count", "5", "--hd-per-media", "2")
    assert seeded.returncode == 0, seeded.stderr
    ids = seeded.stdout.split()
    server.start()

    status, payload, headers = server.request(
        "DELETE",
        "/v1/media/batch",
        {"media_ids": ids[:3] + ["vec-missing"], "reason": "demo"},
        secret,
    )

    assert status == 200
    assert payload["message"] == "Batch deletion completed: 3 deleted, 1 failed"
    assert payload["data"]["deleted"] == {
        "count": 3,
        "media_ids": ids[:3],
        "hd_vectors": 6,
        "ld_vectors": 3,
    }
    assert payload["data"]["failed"]["reasons"] == {"vec-missing": "NOT_FOUND"}
    assert headers["X-Request-ID"].startswith("req_")
    assert server.request("GET", f"/v1/media/{ids[0]}", key=secret)[0] == 404
    assert server.request("GET", f"/v1/media/{ids[4]}", key=secret)[0] == 200
    assert server.stop() == 0

    check = server.cli("check")
    assert check.returncode == 0, check.stdout + check.stderr
    assert "live media: 2" in check.stdout
    assert "points: hd 4, ld 2" in check.stdout


def test_commands_that_open_the_vector_store_refuse_while_serving(server: Server) -> None:
    server.start()

    result = server.cli("seed", "--owner", "acme", "--count", "1")

    assert result.returncode == 1
    assert "stop the server" in result.stderr
    assert "Traceback" not in result.stderr
    assert server.stop() == 0


def test_clean_stop_leaves_no_unclean_marker(server: Server, tmp_path: Path) -> None:
    server.start()
    markers = list((tmp_path / "var" / "run").glob("*.running"))
    assert len(markers) == 1

    assert server.stop() == 0

    assert not markers[0].exists()


def test_restart_after_a_kill_removes_orphan_points(server: Server, tmp_path: Path) -> None:
    seeded = server.cli("seed", "--owner", "acme", "--count", "4", "--hd-per-media", "3")
    ids = seeded.stdout.split()
    server.start()
    server.kill()  # no shutdown hooks: the unclean-stop marker stays behind
    assert len(list((tmp_path / "var" / "run").glob("*.running"))) == 1
    # A row gone without its points: what a crash between the two stores leaves.
    db = sqlite3.connect(tmp_path / "var" / "wickson.db")
    with db:
        db.execute("DELETE FROM media WHERE id = ?", (ids[0],))
    db.close()
    assert server.cli("check").returncode == 1

    server.start()  # start-up runs the full orphan scan
    time.sleep(2.0)  # the scan runs in the background; on 4 media it takes milliseconds
    assert server.stop() == 0

    check = server.cli("check")
    assert check.returncode == 0, check.stdout
    assert "points: hd 9, ld 3" in check.stdout


def test_a_reload_with_a_request_in_flight_keeps_serving(server: Server, tmp_path: Path) -> None:
    """SIGHUP: the new worker waits for the old one to finish and let the store go.

    It used to fail to boot on the locked embedded store, and gunicorn then stopped.
    """
    key = server.cli("keys", "create", "--owner", "acme")
    assert key.returncode == 0, key.stderr
    secret = key.stdout.strip()
    server.log_path = tmp_path / "server.log"
    server.env["LOG_LEVEL"] = "INFO"
    # The fixture's grace of 0 lets the reconciler claim the creation's pending row.
    server.env["RECONCILE_GRACE_SECONDS"] = "60"
    server.start()
    assert server.process is not None
    body = json.dumps({"hd_vectors": [[0.5] * 8], "ld_vectors": [[0.25] * 4]}).encode()
    host, port = server.url.removeprefix("http://").split(":")
    head = (
        f"POST /v1/media HTTP/1.1\r\nHost: {host}\r\nX-Api-Key: {secret}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        "Connection: close\r\n\r\n"
    ).encode()

    with socket.create_connection((host, int(port)), timeout=30) as slow:
        slow.sendall(head + body[:10])  # the old worker is now reading this request
        time.sleep(0.5)
        server.process.send_signal(signal.SIGHUP)
        time.sleep(2)  # the new worker is up, waiting for the store the old one holds
        slow.sendall(body[10:])
        answer = b""
        while chunk := slow.recv(65536):
            answer += chunk

    assert answer.startswith(b"HTTP/1.1 201 "), answer[-300:] + server.log_path.read_bytes()
    media_id = json.loads(answer.split(b"\r\n\r\n", 1)[1])["data"]["media_id"]
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        assert server.process.poll() is None, "gunicorn stopped after the reload"
        try:
            if server.request("GET", f"/v1/media/{media_id}", key=secret)[0] == 200:
                break
        except OSError:
            pass
        time.sleep(0.2)
    else:
        raise AssertionError("the reloaded server never answered")
    assert server.stop() == 0
