"""Fixtures of the integration tests: a real gunicorn on the embedded stores."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.live_server import Server, local_url, server_env


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    env = server_env(tmp_path, RECONCILE_INTERVAL_SECONDS="0.2", RECONCILE_GRACE_SECONDS="0")
    running = Server(local_url(env), env)
    yield running
    if running.process is not None:
        running.kill()
