"""A gunicorn server of wsgi:app on 127.0.0.1 for tests, and the console script beside it.

Test modules import it from here (never from one another).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Server:
    url: str
    env: dict[str, str]
    process: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None  # set: the server's stderr (its JSON log) goes to this file

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(BIN / "wickson-batch"), *args],
            env=self.env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
        )

    def start(self) -> None:
        log = self.log_path.open("ab") if self.log_path else None
        self.process = subprocess.Popen(
            [str(BIN / "gunicorn"), "--config", "gunicorn.conf.py", "wsgi:app"],
            env=self.env,
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=log or subprocess.PIPE,
            start_new_session=True,  # its own process group, so a kill reaches the workers too
        )
        if log:
            log.close()  # the child holds its own copy
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(
                    self.process.stderr.read().decode()
                    if self.process.stderr
                    else self.log_path.read_text()
                    if self.log_path
                    else ""
                )
            try:
                if self.request("GET", "/readyz")[0] == 200:
                    return
            except OSError:
                time.sleep(0.1)
        raise AssertionError("server did not become ready")

    def stop(self) -> int:
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        code = self.process.wait(timeout=30)
        if self.process.stderr:
            self.process.stderr.close()
        self.process = None
        return code

    def kill(self) -> None:
        """SIGKILL the master and its workers at once: a crash, no shutdown hooks."""
        assert self.process is not None
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()
        if self.process.stderr:
            self.process.stderr.close()
        self.process = None

    def request(
        self, method: str, path: str, payload: Any = None, key: str | None = None
    ) -> tuple[int, dict[str, Any], dict[str, str]]:
        data = None if payload is None else json.dumps(payload).encode()
        request = urllib.request.Request(self.url + path, data=data, method=method)
        if payload is not None:
            request.add_header("Content-Type", "application/json")
        if key:
            request.add_header("X-Api-Key", key)
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.status, json.loads(response.read()), dict(response.headers)
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read()), dict(error.headers)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    """A server on the embedded stores in tmp_path, not started; killed after the test."""
    port = free_port()
    env = {
        **os.environ,
        "DATA_DIR": str(tmp_path / "var"),
        "DATABASE_URL": "",
        "QDRANT_URL": "",
        "HOST": "127.0.0.1",
        "PORT": str(port),
        "HD_DIM": "8",
        "LD_DIM": "4",
        "LOG_LEVEL": "WARNING",
        "RECONCILE_INTERVAL_SECONDS": "0.2",
        "RECONCILE_GRACE_SECONDS": "0",
    }
    running = Server(f"http://127.0.0.1:{port}", env)
    yield running
    if running.process is not None:
        running.kill()
