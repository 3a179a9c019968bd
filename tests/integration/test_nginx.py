"""deploy/nginx.conf in front of the app: trickling clients starve nginx, never gunicorn.

Runs Debian's nginx (unprivileged: a temporary prefix, 127.0.0.1 ports) before the app
started as `make run` does. Skips without nginx, except under CI=true where it fails.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.live_server import ROOT, Server, free_port, local_url, server_env

pytestmark = pytest.mark.slow

TRICKLERS = 200


@dataclass
class Proxied:
    app: Server
    nginx: Server  # the same API, reached through nginx
    secret: str


def _wait_for_port(port: int, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        assert process.poll() is None, process.stderr.read().decode() if process.stderr else ""
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise AssertionError("nginx did not listen")


@pytest.fixture
def proxied(tmp_path: Path) -> Iterator[Proxied]:
    nginx = shutil.which("nginx") or (
        "/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None
    )
    if nginx is None:
        if os.environ.get("CI") == "true":
            pytest.fail("nginx is not installed (scripts/test-servers install)")
        pytest.skip("nginx is not installed")
    env = server_env(tmp_path)
    app = Server(local_url(env), env)
    secret = app.cli("keys", "create", "--owner", "acme").stdout.strip()
    app.start()
    prefix = tmp_path / "nginx"
    (prefix / "temp").mkdir(parents=True)
    port = free_port()
    conf = (ROOT / "deploy" / "nginx.conf").read_text()
    conf = conf.replace("server app:8000;", f"server 127.0.0.1:{env['PORT']};")
    conf = re.sub(r"listen 8080;", f"listen 127.0.0.1:{port};", conf)
    conf = conf.replace("worker_processes auto;", "worker_processes 1;")
    (prefix / "nginx.conf").write_text(conf)
    directives = f"daemon off; pid {prefix}/nginx.pid; error_log stderr;"
    if os.geteuid() == 0:  # else its workers run as nobody, who cannot write under tmp_path
        directives += " user root;"
    process = subprocess.Popen(
        [nginx, "-p", str(prefix), "-c", str(prefix / "nginx.conf"), "-g", directives],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        _wait_for_port(port, process)
        yield Proxied(app, Server(f"http://127.0.0.1:{port}", env), secret)
    finally:
        process.terminate()
        process.wait(timeout=10)
        assert process.stderr is not None
        process.stderr.close()
        if app.process is not None:
            app.kill()


def _timed(server: Server, secret: str) -> tuple[float, float]:
    """Seconds for GET /healthz and for a keyed batch deletion, each answered as expected."""
    started = time.monotonic()
    assert server.request("GET", "/healthz")[0] == 200
    health = time.monotonic() - started
    started = time.monotonic()
    status, payload, _ = server.request(
        "DELETE", "/v1/media/batch", {"media_ids": ["vec-missing"]}, secret
    )
    assert status == 200, payload
    return health, time.monotonic() - started


@contextmanager
def _trickled(port: int, seconds: float) -> Iterator[None]:
    """200 connections each sending one header byte a second, for the block's duration."""
    socks = []
    for _ in range(TRICKLERS):
        sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        sock.setblocking(False)
        socks.append(sock)
    stop = threading.Event()
    payload = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: " + b"a" * 1000

    def trickle() -> None:
        offset = 0
        while not stop.wait(0 if offset == 0 else 1.0) and offset < len(payload):
            for sock in socks:
                try:
                    sock.send(payload[offset : offset + 1])
                except OSError:
                    pass
            offset += 1

    thread = threading.Thread(target=trickle, daemon=True)
    thread.start()
    time.sleep(seconds)
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=5)
        for sock in socks:
            sock.close()


def test_trickling_clients_do_not_delay_a_request_through_nginx(proxied: Proxied) -> None:
    nginx_port = int(proxied.nginx.url.rsplit(":", 1)[1])
    app_port = int(proxied.app.env["PORT"])

    with _trickled(nginx_port, 2.0):
        through_nginx = _timed(proxied.nginx, proxied.secret)
    with _trickled(app_port, 2.0):
        try:
            direct: tuple[float, float] | None = _timed(proxied.app, proxied.secret)
        except (TimeoutError, urllib.error.URLError):
            direct = None  # not answered within the client's 10 s

    print(f"through nginx: {through_nginx}; direct to gunicorn: {direct}")
    assert max(through_nginx) < 1.0
    assert direct is None or max(direct) > 1.0


def test_nginx_answers_its_own_errors_in_the_envelope(proxied: Proxied) -> None:
    request = urllib.request.Request(
        proxied.nginx.url + "/v1/media",
        data=b"x" * (9 * 1024 * 1024),
        method="POST",
        headers={"Content-Type": "application/json", "X-Api-Key": proxied.secret},
    )
    with pytest.raises(urllib.error.HTTPError) as too_large:
        urllib.request.urlopen(request, timeout=10)
    assert too_large.value.code == 413
    assert too_large.value.headers["Content-Type"] == "application/json"
    assert too_large.value.read().decode().strip() == (
        '{"success": false, "message": "The request body is too large", '
        '"error": {"code": "PAYLOAD_TOO_LARGE", "details": {}}}'
    )

    status, payload, _ = proxied.nginx.request("GET", "/metrics")
    assert (status, payload["error"]["code"]) == (404, "NOT_FOUND")

    proxied.app.kill()
    status, payload, headers = proxied.nginx.request("GET", "/healthz")

    assert status == 502
    assert headers["Content-Type"] == "application/json"
    assert headers["Retry-After"] == "5"
    assert payload == {
        "success": False,
        "message": "The service is unavailable; retry later",
        "error": {"code": "SERVICE_UNAVAILABLE", "details": {}},
    }
