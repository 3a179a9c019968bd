"""schemathesis with every check, its default phases, against gunicorn on 127.0.0.1."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest

from tests.live_server import BIN, Server

pytestmark = pytest.mark.slow

CONFIG = Path(__file__).with_name("schemathesis.toml")
# Test cases per operation and phase: 19 operations, ~900 requests, about 25 s on 2 cores.
MAX_EXAMPLES = 30


def test_schemathesis_with_every_check_finds_nothing(server: Server, tmp_path: Path) -> None:
    server.env.update(
        {
            # The fuzzer sends hundreds of requests a second, and many wrong keys on purpose.
            "RATE_LIMIT_DEFAULT": "1000000/minute",
            "AUTH_FAILURE_LIMIT": "1000000/minute",
            # The fixture's grace of 0 would let the reconciler take a media being created.
            "RECONCILE_GRACE_SECONDS": "60",
        }
    )
    created = server.cli("keys", "create", "--owner", "fuzzer")
    assert created.returncode == 0, created.stderr
    secret = created.stdout.strip()
    server.start()

    started = time.monotonic()
    run = subprocess.run(
        [
            str(BIN / "schemathesis"),
            "--config-file",
            str(CONFIG),
            "run",
            f"{server.url}/openapi.json",
            "--checks",
            "all",
            "--header",
            f"X-Api-Key: {secret}",
            "--max-examples",
            str(MAX_EXAMPLES),
            # One worker: with two threads, Hypothesis describing its strategies calls
            # ast.parse concurrently, and CPython 3.11.7's parser can then fail with
            # "SystemError: AST constructor recursion depth mismatch" (seen once here).
            "--workers",
            "1",
            "--no-color",
        ],
        cwd=tmp_path,  # its Hypothesis database and any report stay there
        capture_output=True,
        text=True,
        timeout=300,
    )
    seconds = time.monotonic() - started

    output = run.stdout + run.stderr
    assert run.returncode == 0, output[-20000:]
    assert "No issues found" in output, output[-5000:]
    # Every phase ran and reached past authentication; the links drove the stateful phase.
    for phase in ("Coverage", "Fuzzing", "Stateful"):
        assert f"✅  {phase}" in output, output[-5000:]
    assert seconds < 240, f"the fuzz run took {seconds:.0f} s"
    assert server.stop() == 0
