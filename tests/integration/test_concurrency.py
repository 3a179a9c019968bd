"""Overlapping batches from many threads: every id is deleted exactly once."""

from __future__ import annotations

import random
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from flask import Flask

from tests.conftest import Caller, body, stores_of


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
