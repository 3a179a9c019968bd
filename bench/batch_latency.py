"""Measure 100-id batch deletions over HTTP against gunicorn on the embedded stores.

Usage: .venv/bin/python bench/batch_latency.py [--media 10000] [--batches 50] [--size 100]
Seeds a fresh temporary DATA_DIR with the default dimensions (1024/128), serves it with
gunicorn exactly as `make run` does, and prints latency percentiles of DELETE /v1/media/batch.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--media", type=int, default=10_000)
    parser.add_argument("--batches", type=int, default=50)
    parser.add_argument("--size", type=int, default=100)
    args = parser.parse_args()
    needed = args.batches * args.size
    if needed > args.media:
        parser.error(f"--media must be at least batches x size = {needed}")

    with tempfile.TemporaryDirectory() as data_dir:
        port = free_port()
        env = {
            **os.environ,
            "DATA_DIR": data_dir,
            "DATABASE_URL": "",
            "QDRANT_URL": "",
            "PORT": str(port),
            "LOG_LEVEL": "WARNING",
            "RATE_LIMIT_DEFAULT": "1000000/minute",
        }
        cli = [str(BIN / "wickson-batch")]
        started = time.perf_counter()
        seeded = subprocess.run(
            [*cli, "seed", "--owner", "bench", "--count", str(args.media)],
            env=env,
            check=True,
            capture_output=True,
            text=True,
        )
        seed_s = time.perf_counter() - started
        ids = seeded.stdout.split()
        key = subprocess.run(
            [*cli, "keys", "create", "--owner", "bench"],
            env=env,
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
        server = subprocess.Popen(
            [str(BIN / "gunicorn"), "--config", "gunicorn.conf.py", "wsgi:app"],
            env=env,
            cwd=ROOT,
            stderr=subprocess.DEVNULL,
        )
        try:
            started = time.perf_counter()
            while True:
                try:
                    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
                    conn.request("GET", "/readyz")
                    ready = conn.getresponse()
                    ready.read()
                    if ready.status == 200:
                        break
                except OSError:
                    time.sleep(0.05)
            start_s = time.perf_counter() - started
            headers = {"Content-Type": "application/json", "X-Api-Key": key}
            timings = []
            deleted = 0
            for n in range(args.batches):
                batch = ids[n * args.size : (n + 1) * args.size]
                payload = json.dumps({"media_ids": batch})
                t0 = time.perf_counter()
                conn.request("DELETE", "/v1/media/batch", body=payload, headers=headers)
                response = conn.getresponse()
                data = json.loads(response.read())
                timings.append((time.perf_counter() - t0) * 1000)
                assert response.status == 200, data
                deleted += data["data"]["deleted"]["count"]
            assert deleted == needed, (deleted, needed)
        finally:
            server.terminate()
            server.wait(timeout=60)

    print(f"store: {args.media} media (1024 + 128 dims), seeded in {seed_s:.1f} s")
    print(f"server ready in {start_s:.2f} s")
    print(f"{args.batches} batches of {args.size} ids over HTTP, keep-alive:")
    print(
        f"  p50 {statistics.median(timings):.1f} ms  p90 {percentile(timings, 0.9):.1f} ms  "
        f"p99 {percentile(timings, 0.99):.1f} ms  max {max(timings):.1f} ms"
    )


if __name__ == "__main__":
    main()
