"""The benchmark harness at its smoke size: it runs end to end and reports every figure."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
STATS = {"n", "p50", "p90", "p99", "max"}
TARGETS = 5


def _assert_stats(stats: dict[str, Any], samples: int) -> None:
    assert set(stats) == STATS
    assert stats["n"] == samples
    assert 0 < stats["p50"] <= stats["p90"] <= stats["p99"] <= stats["max"]


@pytest.mark.slow
def test_smoke_run_reports_every_figure(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "harness.py"), "--smoke", "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(out.read_text())
    options = report["options"]
    assert report["machine"]["cores"] >= 1 and report["machine"]["cpu"]

    results = report["results"]
    assert [(r["engine"], r["size"]) for r in results] == [
        ("edge", options["sizes"][0]),
        ("qdrant-local", options["local_sizes"][0]),
    ]
    for result in results:
        samples = options["samples"] if result["engine"] == "edge" else options["local_samples"]
        assert set(result["latency_ms"]) == {"1", "10", "100"}
        assert set(result["floor_ms"]) == {"1", "10", "100"}
        for size in ("1", "10", "100"):
            _assert_stats(result["latency_ms"][size], samples)
            for part in ("total", "sql", "vectors"):
                _assert_stats(result["floor_ms"][size][part], samples)
            ratio = result["ratio_http_to_floor_p50"][size]
            expected = result["latency_ms"][size]["p50"] / result["floor_ms"][size]["total"]["p50"]
            assert ratio == pytest.approx(expected, abs=0.01)
        if result["engine"] == "edge":  # the raw floor is qdrant-edge's
            assert set(result["raw_floor_ms"]) == {"1", "10", "100"}
            for size in ("1", "10", "100"):
                for part in ("total", "sql", "vectors"):
                    _assert_stats(result["raw_floor_ms"][size][part], samples)
                raw = result["raw_floor_ms"][size]["total"]["p50"]
                expected = result["latency_ms"][size]["p50"] / raw
                ratio = result["ratio_http_to_raw_floor_p50"][size]
                assert ratio == pytest.approx(expected, abs=0.01)
        else:
            assert "raw_floor_ms" not in result
        _assert_stats(result["service_ms"]["100"], samples)
        assert result["start_seconds"]["median"] > 0
        assert len(result["start_seconds"]["all"]) == result["server_sessions"] >= 1
        assert result["rss_mib"] > 10  # gunicorn master + worker, both Python processes

    throughput = results[0]["throughput"]
    assert set(throughput) == {str(c) for c in options["clients"]}
    for figures in throughput.values():
        assert figures["deleted"] == options["throughput_batches"] * 100
        assert figures["media_per_s"] > 0
    assert results[1]["throughput"] == {}  # local mode: latency only

    checks = report["targets"]
    assert len(checks) == TARGETS
    assert {c["status"] for c in checks} <= {"pass", "miss", "not run"}
    assert checks[0]["status"] in {"pass", "miss"} and checks[0]["ratio"] > 0
    assert checks[0]["target"].startswith("100-id HTTP p50 / raw floor p50")
    assert checks[2]["status"] == "not run"  # no 1M store at the smoke size
    assert checks[-1]["target"].startswith("media/s with 1 client(s) / with 2")
    assert "targets (ratios measured in this run):" in done.stdout
