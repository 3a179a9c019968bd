"""Overlapping batches from many threads and processes: every id is deleted exactly once."""

from __future__ import annotations

import json
import multiprocessing
import random
import urllib.request
from collections import Counter
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from itertools import repeat
from typing import Any

import pytest
from flask import Flask

from tests.conftest import Caller, body, stores_of
from tests.gunicorn import Server, server

__all__ = ["server"]  # the real-server fixture, used here too


def test_overlapping_batches_delete_each_id_exactly_once(alice: Caller, app: Flask) -> None:
    ids = [alice.create(hd=2, ld=1, seed=n) for n in range(40)]
    rng = random.Random(7)
    batches = [rng.sample(ids, 25) for _ in range(16)]

    def send(batch: list[str]) -> dict[str, Any]:
        data: dict[str, Any] = body(alice.delete_batch(batch))["data"]
        return data

    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(send, batches))

    deleted = Counter(m for r in results for m in r["deleted"]["media_ids"])
    covered = {m for batch in batches for m in batch}
    assert set(deleted) == covered
    assert set(deleted.values()) == {1}
    assert sum(r["deleted"]["hd_vectors"] for r in results) == 2 * len(covered)
    vectors = stores_of(app).vectors
    remaining = len(ids) - len(covered)
    assert (vectors.count("hd"), vectors.count("ld")) == (2 * remaining, remaining)


def _client_process(url: str, key: str, batches: list[list[str]]) -> list[dict[str, Any]]:
    """One client process: its batches from four threads over keep-alive-free HTTP."""

    def send(batch: list[str]) -> dict[str, Any]:
        payload = json.dumps({"media_ids": batch}).encode()
        request = urllib.request.Request(
            url + "/v1/media/batch",
            data=payload,
            method="DELETE",
            headers={"Content-Type": "application/json", "X-Api-Key": key},
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            answer: dict[str, Any] = json.loads(response.read())["data"]
            return answer

    with ThreadPoolExecutor(max_workers=4) as pool:
        return list(pool.map(send, batches))


@pytest.mark.slow
def test_overlapping_batches_from_processes_delete_each_id_once(server: Server) -> None:
    key = server.cli("keys", "create", "--owner", "acme").stdout.strip()
    seeded = server.cli(
        "seed", "--owner", "acme", "--count", "600", "--hd-per-media", "3",
        "--ld-per-media", "2",
    )  # fmt: skip
    ids = seeded.stdout.split()
    server.env["RATE_LIMIT_DEFAULT"] = "1000000/minute"
    server.start()
    rng = random.Random(11)
    plans = [[rng.sample(ids, 50) for _ in range(12)] for _ in range(4)]  # 4 processes

    spawn = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=len(plans), mp_context=spawn) as pool:
        results = [r for done in pool.map(_client_process, repeat(server.url), repeat(key), plans)
                   for r in done]  # fmt: skip

    deleted = Counter(m for r in results for m in r["deleted"]["media_ids"])
    covered = {m for plan in plans for batch in plan for m in batch}
    assert set(deleted) == covered  # every id sent was deleted ...
    assert set(deleted.values()) == {1}  # ... in exactly one response
    assert sum(r["deleted"]["hd_vectors"] for r in results) == 3 * len(covered)
    assert sum(r["deleted"]["ld_vectors"] for r in results) == 2 * len(covered)
    failed = Counter(reason for r in results for reason in r["failed"]["reasons"].values())
    assert failed == Counter({"NOT_FOUND": 48 * 50 - len(covered)})
    assert server.stop() == 0
    check = server.cli("check")
    left = len(ids) - len(covered)
    assert f"live media: {left}" in check.stdout, check.stdout
    assert f"points: hd {3 * left}, ld {2 * left}" in check.stdout, check.stdout
