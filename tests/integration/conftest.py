"""Fixtures of the integration tests: a real gunicorn on the embedded stores."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.live_server import Server, free_port


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
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
