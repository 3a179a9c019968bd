"""Fixtures of the integration tests: a real gunicorn on the embedded stores."""

from __future__ import annotations

from collections.abc import Callable, Iterator
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


@pytest.fixture
def job_server(tmp_path: Path) -> Iterator[Callable[..., Server]]:
    """Make (once) a gunicorn on the embedded stores that runs deletion jobs in the background.

    Its reconciler and runner are quick to act (a dead runner's lease lapses in 1.5 s);
    keyword arguments add or replace variables (`JOB_MAX_MEDIA_PER_SECOND="200"`).
    """
    made: list[Server] = []

    def make(**overrides: str) -> Server:
        env = server_env(
            tmp_path,
            LOG_LEVEL="ERROR",
            RATE_LIMIT_DEFAULT="1000000/minute",
            RECONCILE_INTERVAL_SECONDS="0.2",
            RECONCILE_GRACE_SECONDS="1",
            JOB_LEASE_SECONDS="1.5",
            JOB_POLL_INTERVAL_SECONDS="0.1",
            **overrides,
        )
        made.append(Server(local_url(env), env))
        return made[-1]

    yield make
    for running in made:
        if running.process is not None:
            running.kill()
