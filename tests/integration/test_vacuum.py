"""The vacuum (DESIGN.md section 15) on the real embedded engine and a real SQLite file."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from tests.helpers import settings_for, vector
from wickson_batch.config import Settings, load_settings
from wickson_batch.logs import configure_logging
from wickson_batch.services import cleanup, deletion, media
from wickson_batch.services.seeding import seed_media
from wickson_batch.services.stores import Stores, vacuum_policy
from wickson_batch.services.vacuum import Vacuum, VacuumPolicy, VacuumStep, vacuum_due
from wickson_batch.vectors.base import Space
from wickson_batch.vectors.edge import VACUUM_STATE

OWNER = "alice"
SEEDED = 3_000


def vector_files_bytes(data_dir: Path) -> int:
    """The apparent size of the vector storage files (DESIGN.md section 15 judges by them)."""
    total = 0
    for folder, _, names in os.walk(data_dir / "vectors"):
        if "vector_storage" in folder:
            total += sum(os.path.getsize(os.path.join(folder, name)) for name in names)
    return total


@pytest.fixture
def config(tmp_path: Path) -> Settings:
    return load_settings(settings_for(tmp_path, "edge"), environ={})


@pytest.fixture
def held(config: Settings) -> Iterator[Stores]:
    stores = Stores.open(config)
    yield stores
    stores.close()


def seed(held: Stores, count: int = SEEDED) -> list[str]:
    ids = [
        i
        for batch in seed_media(held.db, held.vectors, owner=OWNER, count=count, seed=1)
        for i in batch
    ]
    held.vectors.flush()
    return ids


def pending(held: Stores, space: Space) -> int:
    """The points of a space counted deleted and not yet vacuumed."""
    points = held.vectors.deleted_points(space)
    assert points is not None
    return points.deleted


def delete(held: Stores, media_ids: list[str]) -> None:
    for start in range(0, len(media_ids), 100):
        outcome = deletion.delete_batch(
            held.db, held.vectors, owner=OWNER, media_ids=media_ids[start : start + 100]
        )
        assert not outcome.failed and not outcome.cleanup_pending
    held.vectors.flush()


def test_one_vacuum_after_deleting_90_percent_shrinks_the_vector_files_to_40_percent(
    held: Stores, config: Settings
) -> None:
    ids = seed(held)
    before = vector_files_bytes(Path(config.data_dir))
    delete(held, ids[: SEEDED * 9 // 10])
    kept = ids[SEEDED * 9 // 10 :]
    vacuum = Vacuum(held.db, held.vectors, vacuum_policy(config), interval=600)

    steps = vacuum.run_once()

    after = vector_files_bytes(Path(config.data_dir))
    assert [(s.space, s.deleted, s.live, s.rewritten) for s in steps] == [
        ("hd", 2_700, 300, True),
        ("ld", 2_700, 300, True),
    ]
    assert after <= 0.4 * before, (before, after)
    assert [pending(held, "hd"), pending(held, "ld")] == [0, 0]
    report = cleanup.check_consistency(held.db, held.vectors)
    assert (report.consistent, report.live_media, report.points) == (
        True,
        300,
        {"hd": 300, "ld": 300},
    )
    # What is left still answers a search, its own media first.
    found = media.search_media(
        held.db, held.vectors, owner=OWNER, space="ld", vector=vector(4, 0), limit=100
    )
    assert len(found) == 100 and {hit.media_id for hit in found} <= set(kept)


def test_a_space_under_the_threshold_waits_for_its_oldest_deletion_to_age(
    held: Stores,
) -> None:
    ids = seed(held, 1_000)
    delete(held, ids[:100])  # 10 % of each space
    points = held.vectors.deleted_points("hd")
    assert points is not None and (points.deleted, points.live) == (100, 900)
    now = time.time()

    assert not VacuumPolicy(threshold=0.2, max_age_seconds=3600).due(points, now)
    assert VacuumPolicy(threshold=0.1, max_age_seconds=3600).due(points, now)
    assert VacuumPolicy(threshold=0.2, max_age_seconds=3600).due(points, now + 3600)
    steps = vacuum_due(held.vectors, held.db.gate, VacuumPolicy(0.2, 3600), pause=0)
    assert steps == []


def test_the_deletion_counts_survive_a_restart(config: Settings) -> None:
    held = Stores.open(config)
    try:
        delete(held, seed(held, 200)[:50])
        counted = held.vectors.deleted_points("ld")
    finally:
        held.close()
    reopened = Stores.open(config)
    try:
        assert reopened.vectors.deleted_points("ld") == counted
        assert counted is not None and counted.deleted == 50
    finally:
        reopened.close()


def test_a_store_without_its_counts_is_due_at_once(config: Settings) -> None:
    held = Stores.open(config)
    try:
        seed(held, 50)
    finally:
        held.close()
    os.remove(Path(config.data_dir) / "vectors" / VACUUM_STATE)  # as a store made before them
    reopened = Stores.open(config)
    try:
        points = reopened.vectors.deleted_points("hd")
        assert points is not None and (points.deleted, points.oldest) == (0, 0.0)
        assert vacuum_policy(config).due(points, time.time())
    finally:
        reopened.close()


def test_a_vacuum_step_waits_for_open_transactions_and_holds_new_ones_back(
    held: Stores,
) -> None:
    delete(held, seed(held, 100))
    order: list[str] = []
    opened = threading.Event()
    release = threading.Event()

    def transaction() -> None:
        with held.db.unit_of_work():
            opened.set()
            release.wait(10)
            order.append("transaction ended")

    worker = threading.Thread(target=transaction)
    worker.start()
    opened.wait(10)
    stepper = threading.Thread(
        target=lambda: order.extend(
            f"vacuumed {s.space}"
            for s in vacuum_due(held.vectors, held.db.gate, VacuumPolicy(0.2, 3600), pause=0)
        )
    )
    stepper.start()
    time.sleep(0.3)
    release.set()
    worker.join(10)
    stepper.join(60)

    assert order == ["transaction ended", "vacuumed hd", "vacuumed ld"]


def test_a_step_is_postponed_while_a_transaction_stays_open(held: Stores) -> None:
    delete(held, seed(held, 100))
    with held.db.unit_of_work(), capture_logs() as logs:
        steps = vacuum_due(held.vectors, held.db.gate, VacuumPolicy(0.2, 3600), pause=0)

    assert steps == []
    assert {(e["event"], e["space"]) for e in logs} == {
        ("vacuum.postponed", "hd"),
        ("vacuum.postponed", "ld"),
    }
    assert pending(held, "hd") == 100  # still owed


def test_every_step_is_told_to_the_observers_and_logged(held: Stores, config: Settings) -> None:
    delete(held, seed(held, 100))
    seen: list[VacuumStep] = []
    vacuum = Vacuum(
        held.db, held.vectors, vacuum_policy(config), interval=600, observers=[seen.append]
    )

    configure_logging("INFO")  # an earlier test may have left the level at WARNING
    with capture_logs() as logs:
        steps = vacuum.run_once()

    assert seen == steps and [s.space for s in steps] == ["hd", "ld"]
    logged = [e for e in logs if e["event"] == "vacuum.step"]
    assert [(e["space"], e["deleted"], e["live"]) for e in logged] == [
        ("hd", 100, 0),
        ("ld", 100, 0),
    ]
    assert all(e["seconds"] > 0 and e["started"] > 0 for e in logged)


def test_reopening_after_a_vacuum_is_no_slower(config: Settings) -> None:
    held = Stores.open(config)
    try:
        delete(held, seed(held)[: SEEDED // 2])
    finally:
        held.close()
    clock = time.perf_counter()
    Stores.open(config).close()
    before = time.perf_counter() - clock
    held = Stores.open(config)
    try:
        vacuum_due(held.vectors, held.db.gate, vacuum_policy(config), force=True, pause=0)
    finally:
        held.close()
    clock = time.perf_counter()
    Stores.open(config).close()
    after = time.perf_counter() - clock

    assert after <= 2 * before + 0.5, (before, after)  # noisy shared machine: generous


def test_sqlite_pages_of_deleted_rows_are_given_back(held: Stores, config: Settings) -> None:
    delete(held, seed(held, 2_000))
    path = Path(config.database_url.removeprefix("sqlite:///"))
    with held.db.engine.connect() as connection:
        free = connection.exec_driver_sql("PRAGMA freelist_count").scalar()
        assert free and free > 0

    freed = held.db.reclaim_pages(step_pages=16)

    with held.db.engine.connect() as connection:
        assert connection.exec_driver_sql("PRAGMA freelist_count").scalar() == 0
    assert freed == free
    assert path.exists()
