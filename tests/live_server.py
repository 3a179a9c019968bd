"""A real gunicorn serving wsgi:app in a subprocess, driven over HTTP and by its CLI."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from wickson_batch.config import load_settings
from wickson_batch.services.stores import Stores
from wickson_batch.vectors.base import SPACES

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def free_port() -> int:
    """Return a free TCP port on 127.0.0.1."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def server_env(tmp_path: Path, **overrides: str) -> dict[str, str]:
    """Return the environment of a gunicorn (and of its CLI) on a free port of 127.0.0.1.

    It serves the embedded stores under `tmp_path` with small vectors (8 and 4 dimensions),
    logging warnings; `overrides` replace or add variables (`LOG_LEVEL="INFO"`).
    """
    return {
        **os.environ,
        "DATA_DIR": str(tmp_path / "var"),
        "DATABASE_URL": "",
        "QDRANT_URL": "",
        "HOST": "127.0.0.1",
        "PORT": str(free_port()),
        "HD_DIM": "8",
        "LD_DIM": "4",
        "LOG_LEVEL": "WARNING",
        **overrides,
    }


def local_url(env: dict[str, str]) -> str:
    """Return the base URL of the server that `env` configures."""
    return f"http://127.0.0.1:{env['PORT']}"


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


def sql(tmp_path: Path, query: str, *args: object) -> list[tuple[Any, ...]]:
    """Read the SQL truth directly (WAL lets us read beside a running server)."""
    db = sqlite3.connect(tmp_path / "var" / "wickson.db")
    try:
        return list(db.execute(query, args))
    finally:
        db.close()


def check_figures(server: Server) -> dict[str, int]:
    """Run `wickson-batch check` (server stopped) and return its figures."""
    result = server.cli("check")
    assert "Traceback" not in result.stderr, result.stderr

    def number(pattern: str) -> int:
        found = re.search(pattern, result.stdout)
        assert found, result.stdout
        return sum(int(group) for group in found.groups())

    return {
        "exit": result.returncode,
        "pending_media": number(r"pending media: (\d+)"),
        "pending_tasks": number(r"pending cleanup tasks: (\d+)"),
        "orphans": number(r"orphan points: hd (\d+), ld (\d+)"),
        "missing": number(r"media missing points: (\d+)"),
    }


def scan_points(env: dict[str, str]) -> dict[str, dict[str, int]]:
    """Count every point per media in both collections (server stopped)."""
    held = Stores.open(load_settings(environ=env))
    try:
        counts: dict[str, dict[str, int]] = {space: {} for space in SPACES}
        for space in SPACES:
            for page in held.vectors.scan(space):
                for point in page:
                    counts[space][point.media_id] = counts[space].get(point.media_id, 0) + 1
        return counts
    finally:
        held.close()


def wait_until(condition: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.1)
    raise AssertionError("condition not reached in time")
