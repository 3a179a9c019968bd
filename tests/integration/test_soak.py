"""The soak (bench/soak.py) in its short version: a live server under the mixed load."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PROCESS_FIGURES = {"rss", "anon", "file", "fds", "threads"}
DISK_FIGURES = {"vectors", "vector_storage", "sqlite", "sqlite_wal"}


@pytest.mark.slow
def test_a_short_soak_vacuums_under_load_and_ends_consistent(tmp_path: Path) -> None:
    out = tmp_path / "soak.json"
    done = subprocess.run(
        [
            sys.executable,
            str(ROOT / "bench" / "soak.py"),
            "--minutes",
            "0.75",
            "--small",
            "--seed",
            "1500",
            "--report-seconds",
            "15",
            # A vacuum within the run: look every 10 s, at 5 % deleted.
            "--server-env",
            "VACUUM_INTERVAL_SECONDS=10",
            "--server-env",
            "VACUUM_DELETED_THRESHOLD=0.05",
            "--out",
            str(out),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=400,
    )

    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    figures = json.loads(out.read_text())
    assert figures["problems"] == []
    assert figures["check"][-1] == "consistent"
    reports = figures["reports"]
    assert len(reports) >= 3
    for report in reports:
        assert PROCESS_FIGURES | DISK_FIGURES <= set(report)
        assert sum(report["requests"].values()) > 0
    assert figures["vacuum"]["steps"] >= 2  # both spaces at least once
    # /metrics is read when the load stops; the log also holds steps taken after it.
    runs = sum(value for _, value in figures["vacuum_metrics"]["wickson_vacuum_runs_total"])
    assert 2 <= runs <= figures["vacuum"]["steps"]
    assert "[report 1]" in done.stdout and "soak passed" in done.stdout
