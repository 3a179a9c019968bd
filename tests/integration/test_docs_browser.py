"""/docs in a real browser: headless Chromium renders the reference from a real server."""

from __future__ import annotations

import html
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.gunicorn import Server, free_port

pytestmark = pytest.mark.slow

CHROMIUM = shutil.which("chromium")


@pytest.fixture
def chromium() -> str:
    if CHROMIUM is None:
        reason = "chromium is not installed (Debian: apt-get install -y chromium)"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{reason}; .ci/run installs it, so CI must have it")
        pytest.skip(reason)
    return CHROMIUM


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Server]:
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
    }
    server = Server(f"http://127.0.0.1:{port}", env)
    server.start()
    yield server
    server.stop()


def rendered_dom(chromium: str, url: str, profile: Path) -> str:
    """Load `url` in headless Chromium, let its scripts run, and return the resulting DOM."""
    result = subprocess.run(
        [
            chromium,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={profile}",
            "--virtual-time-budget=10000",
            "--dump-dom",
            url,
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


def test_chromium_renders_the_batch_endpoint(chromium: str, served: Server, tmp_path: Path) -> None:
    dom = rendered_dom(chromium, served.url + "/docs", tmp_path / "profile")

    # Swagger UI drew the operations from /openapi.json: the markup below exists only then.
    assert 'class="swagger-ui"' in dom
    operations = {html.unescape(path) for path in re.findall(r'data-path="([^"]*)"', dom)}
    assert "/v1/media/batch" in operations
    assert "/v1/media/batch/delete" in operations
    assert "opblock-delete" in dom  # the DELETE operation block
    assert "Delete up to 100 media and their vectors" in dom
