"""The `wickson-batch` console script on real stores in a temporary DATA_DIR."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from sqlalchemy import delete, select, update

from wickson_batch.cli import main
from wickson_batch.db import Database
from wickson_batch.models import CleanupTask, Media, Operation, utcnow
from wickson_batch.protocol import SCOPES, OperationStatus
from wickson_batch.services import keys
from wickson_batch.services.deletion import get_operation
from wickson_batch.vectors.base import Space, point_ids_for
from wickson_batch.vectors.edge import EdgeIndex

Invoke = Callable[..., Result]

MEDIA_ID = re.compile(r"^vec-[0-9a-f]{32}$")
TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")
KEYS_HEADER = ["id", "owner", "name", "scopes", "rate_limit", "created", "revoked"]


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "var"


@pytest.fixture
def invoke(data_dir: Path) -> Invoke:
    """Run the console script with an environment pointing at `data_dir`."""
    env: dict[str, str | None] = {
        "DATA_DIR": str(data_dir),
        "DATABASE_URL": "",
        "QDRANT_URL": "",
        "QDRANT_API_KEY": "",
        "HD_DIM": "8",
        "LD_DIM": "4",
    }
    runner = CliRunner()

    def run(*args: str) -> Result:
        return runner.invoke(main, list(args), env=env)

    return run


@pytest.fixture
def db(data_dir: Path) -> Iterator[Database]:
    """The database the console script uses by default: DATA_DIR/wickson.db."""
    database = Database(f"sqlite:///{data_dir / 'wickson.db'}")
    database.upgrade_schema()
    yield database
    database.dispose()


def created_key(invoke: Invoke, *args: str) -> str:
    """Create a key for `acme` and return the one line it printed."""
    result = invoke("keys", "create", "--owner", "acme", *args)
    assert result.exit_code == 0, result.output
    return result.stdout.strip()


def principal(db: Database, key: str) -> keys.Principal:
    """Return the principal of a key that must authenticate."""
    found = keys.authenticate(db, key)
    assert found is not None
    return found


def key_rows(invoke: Invoke) -> list[list[str]]:
    """Return `keys list` as rows of fields, the header first."""
    result = invoke("keys", "list")
    assert result.exit_code == 0, result.output
    return [line.split("\t") for line in result.stdout.splitlines()]


def seeded(invoke: Invoke, count: int = 25) -> list[str]:
    """Seed media with 2 hd and 1 ld point each and return their ids."""
    per_media = ("--hd-per-media", "2", "--ld-per-media", "1")
    result = invoke("seed", "--owner", "acme", "--count", str(count), *per_media)
    assert result.exit_code == 0, result.output
    return result.stdout.splitlines()


def check_lines(live: int, hd: int, ld: int, orphan_hd: int = 0, orphan_ld: int = 0) -> list[str]:
    """Return what `check` prints for a store with no pending work and no missing points."""
    return [
        f"live media: {live}, pending media: 0",
        f"points: hd {hd}, ld {ld}",
        "pending cleanup tasks: 0",
        f"orphan points: hd {orphan_hd}, ld {orphan_ld}",
        "media missing points: 0",
    ]


def lose_points(data_dir: Path, losses: dict[str, dict[Space, int]]) -> None:
    """Delete some of each media's points straight from the store, as lost writes would."""
    index = EdgeIndex(str(data_dir), {"hd": 8, "ld": 4})
    index.ensure()
    try:
        for media_id, spaces in losses.items():
            for space, count in spaces.items():
                index.delete(space, point_ids_for(media_id, space, count))
        index.flush()
    finally:
        index.close()


def age(db: Database, media_ids: list[str], minutes: int = 10) -> None:
    """Make media look created `minutes` ago: past the reconciler's grace period."""
    with db.unit_of_work() as uow:
        uow.session.execute(
            update(Media)
            .where(Media.id.in_(media_ids))
            .values(created_at=utcnow() - timedelta(minutes=minutes))
        )
        uow.commit()


# keys create


def test_keys_create_prints_only_the_key_on_stdout(invoke: Invoke) -> None:
    result = invoke("keys", "create", "--owner", "acme")

    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("wkb_")
    assert len(lines[0]) > 40
    assert lines[0] not in result.stderr


def test_created_key_authenticates_for_its_owner(invoke: Invoke, db: Database) -> None:
    key = created_key(invoke)

    assert principal(db, key).owner == "acme"


def test_created_key_has_all_three_scopes_by_default(invoke: Invoke, db: Database) -> None:
    key = created_key(invoke)

    assert principal(db, key).scopes == frozenset(SCOPES)


def test_scope_option_restricts_the_key(invoke: Invoke, db: Database) -> None:
    key = created_key(invoke, "--scope", "media:read")

    assert principal(db, key).scopes == frozenset({"media:read"})


def test_rate_limit_option_is_stored_on_the_key(invoke: Invoke, db: Database) -> None:
    key = created_key(invoke, "--rate-limit", "5/minute")

    assert principal(db, key).rate_limit == "5/minute"


def test_bad_rate_limit_is_refused_clearly_and_stores_nothing(invoke: Invoke, db: Database) -> None:
    result = invoke("keys", "create", "--owner", "acme", "--rate-limit", "nonsense")

    assert result.exit_code == 1
    assert result.stdout == ""
    assert "rate limit 'nonsense' is not like '100/minute'" in result.stderr
    assert "Traceback" not in result.output
    assert keys.list_keys(db) == []


def test_unknown_scope_is_refused(invoke: Invoke, db: Database) -> None:
    result = invoke("keys", "create", "--owner", "acme", "--scope", "media:everything")

    assert result.exit_code == 2
    assert "media:everything" in result.stderr
    assert keys.list_keys(db) == []


# keys list


def test_keys_list_shows_id_owner_name_scopes_limit_created_revoked(invoke: Invoke) -> None:
    created_key(invoke, "--name", "ci", "--rate-limit", "5/minute")
    created_key(invoke, "--scope", "media:read")

    header, first, second = key_rows(invoke)

    assert header == KEYS_HEADER
    assert first[:5] == ["1", "acme", "ci", "media:read,media:write,media:delete", "5/minute"]
    assert TIMESTAMP.match(first[5])
    assert first[6] == "-"
    assert second[:5] == ["2", "acme", "-", "media:read", "default"]


def test_keys_list_never_shows_the_key_or_its_hash(invoke: Invoke) -> None:
    key = created_key(invoke)

    listing = invoke("keys", "list").output

    assert key not in listing
    assert keys.hash_key(key) not in listing


# keys revoke


def test_revoked_key_no_longer_authenticates(invoke: Invoke, db: Database) -> None:
    key = created_key(invoke)
    key_id = principal(db, key).key_id

    result = invoke("keys", "revoke", str(key_id))

    assert result.exit_code == 0, result.output
    assert keys.authenticate(db, key) is None


def test_revoked_key_shows_its_revocation_time_in_the_list(invoke: Invoke, db: Database) -> None:
    key = created_key(invoke)
    invoke("keys", "revoke", str(principal(db, key).key_id))

    _, row = key_rows(invoke)

    assert TIMESTAMP.match(row[6])


def test_revoking_an_unknown_id_exits_1_with_a_message(invoke: Invoke) -> None:
    result = invoke("keys", "revoke", "999")

    assert result.exit_code == 1
    assert "no API key with id 999" in result.stderr
    assert "Traceback" not in result.output


# seed, check, reconcile


def test_seed_prints_one_new_media_id_a_line(invoke: Invoke) -> None:
    ids = seeded(invoke, 25)

    assert len(ids) == 25
    assert len(set(ids)) == 25
    assert all(MEDIA_ID.match(media_id) for media_id in ids)


def test_check_after_seeding_is_consistent(invoke: Invoke) -> None:
    seeded(invoke, 25)

    result = invoke("check")

    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [*check_lines(25, 50, 25), "consistent"]


def test_check_reports_orphan_points_and_exits_1(invoke: Invoke, db: Database) -> None:
    orphan = seeded(invoke, 25)[0]
    with db.unit_of_work() as uow:
        uow.session.execute(delete(Media).where(Media.id == orphan))
        uow.commit()

    result = invoke("check")

    assert result.exit_code == 1
    assert result.stdout.splitlines() == check_lines(24, 50, 25, orphan_hd=2, orphan_ld=1)
    assert "INCONSISTENT: run `wickson-batch reconcile`" in result.stderr


def test_reconcile_removes_orphan_points(invoke: Invoke, db: Database) -> None:
    orphan = seeded(invoke, 25)[0]
    with db.unit_of_work() as uow:
        uow.session.execute(delete(Media).where(Media.id == orphan))
        uow.commit()

    reconciled = invoke("reconcile")
    checked = invoke("check")

    assert reconciled.exit_code == 0, reconciled.output
    assert reconciled.stdout.splitlines() == [
        "cleanup tasks done: 0, failed: 0; stale pending media removed: 0; "
        "orphan points removed: hd 2, ld 1"
    ]
    assert checked.exit_code == 0, checked.output
    assert checked.stdout.splitlines() == [*check_lines(24, 48, 24), "consistent"]


def test_reconcile_retries_cleanup_waiting_out_its_backoff(invoke: Invoke, db: Database) -> None:
    # As after a vector-store outage: the row is gone, its points are still there, and the
    # task's next attempt is minutes away. An operator's reconcile tries it now.
    gone = seeded(invoke, 25)[0]
    now = utcnow()
    with db.unit_of_work() as uow:
        uow.session.execute(delete(Media).where(Media.id == gone))
        uow.session.add(
            CleanupTask(
                media_id=gone,
                operation_id="batch_delete_outage",
                hd_count=2,
                ld_count=1,
                created_at=now - timedelta(minutes=10),
                next_attempt_at=now + timedelta(minutes=5),
                attempts=6,
                last_error="connection refused",
            )
        )
        uow.commit()

    reconciled = invoke("reconcile")
    checked = invoke("check")

    assert reconciled.exit_code == 0, reconciled.output
    assert reconciled.stdout.splitlines() == [
        "cleanup tasks done: 1, failed: 0; stale pending media removed: 0; "
        "orphan points removed: hd 0, ld 0"
    ]
    assert checked.stdout.splitlines() == [*check_lines(24, 48, 24), "consistent"]


def test_command_needing_the_locked_store_says_to_stop_the_server(
    invoke: Invoke, data_dir: Path
) -> None:
    held = EdgeIndex(str(data_dir), {"hd": 8, "ld": 4})
    held.ensure()
    try:
        result = invoke("check")
    finally:
        held.close()

    assert result.exit_code == 1
    assert "stop the server" in result.stderr
    assert "Traceback" not in result.output
    assert isinstance(result.exception, SystemExit)


def test_optimize_refuses_while_the_store_is_open_elsewhere(invoke: Invoke, data_dir: Path) -> None:
    held = EdgeIndex(str(data_dir), {"hd": 8, "ld": 4})
    held.ensure()
    try:
        result = invoke("optimize")
    finally:
        held.close()

    assert result.exit_code == 1
    assert "stop the server" in result.stderr
    assert "Traceback" not in result.output


def test_optimize_vacuums_every_space_or_only_those_due(invoke: Invoke) -> None:
    assert invoke("seed", "--owner", "alice", "--count", "20").exit_code == 0

    due = invoke("optimize", "--if-due")
    forced = invoke("optimize")

    assert due.exit_code == 0, due.output
    assert due.stdout.splitlines()[0] == "no space is due a vacuum"
    assert re.fullmatch(
        r"vector store on disk: [0-9.]+ MiB -> [0-9.]+ MiB", due.stdout.splitlines()[1]
    )
    assert forced.exit_code == 0, forced.output
    lines = forced.stdout.splitlines()
    for line, space in zip(lines, ("hd", "ld"), strict=False):
        assert re.fullmatch(
            rf"{space}: vacuumed in [0-9.]+ s \(0 points counted deleted, 20 live\)", line
        ), line
    assert lines[3].startswith("sqlite pages given back: ")
    assert invoke("check").stdout.splitlines()[-1] == "consistent"


# live media whose points are gone


NOTHING_ELSE = (
    "cleanup tasks done: 0, failed: 0; stale pending media removed: 0; "
    "orphan points removed: hd 0, ld 0"
)


def test_live_media_missing_points_are_named_and_repaired_as_operations(
    invoke: Invoke, db: Database, data_dir: Path
) -> None:
    ids = seeded(invoke, 6)
    age(db, ids)
    no_hd, one_ld, young = sorted(ids[:3])
    # young: a creation inside the grace period may still be writing its points
    age(db, [young], minutes=0)
    lose_points(data_dir, {no_hd: {"hd": 2}, one_ld: {"ld": 1}, young: {"hd": 1}})

    checked = invoke("check")
    left = invoke("reconcile")
    repaired = invoke("reconcile", "--repair")
    after = invoke("check")

    assert checked.exit_code == 1
    assert checked.stdout.splitlines() == [
        "live media: 6, pending media: 0",
        "points: hd 9, ld 5",
        "pending cleanup tasks: 0",
        "orphan points: hd 0, ld 0",
        "media missing points: 3",
        *sorted(
            [f"  {no_hd} hd 0/2 ld 1/1", f"  {one_ld} hd 2/2 ld 0/1", f"  {young} hd 1/2 ld 1/1"]
        ),
    ]
    assert "INCONSISTENT: run `wickson-batch reconcile --repair`" in checked.stderr
    assert left.exit_code == 0, left.output
    assert left.stdout.splitlines() == [
        NOTHING_ELSE,
        "live media missing points: 2, left as they are: "
        "run `wickson-batch reconcile --repair` to delete them",
        f"  {no_hd} hd 0/2 ld 1/1",
        f"  {one_ld} hd 2/2 ld 0/1",
        "live media missing points younger than 60 s, left for a later run: 1",
    ]
    assert repaired.exit_code == 0, repaired.output
    first, summary, too_young = repaired.stdout.splitlines()
    assert first == NOTHING_ELSE
    assert re.fullmatch(
        r"live media missing points repaired: 2; operations: batch_delete_[0-9a-f]{32}", summary
    )
    assert too_young == "live media missing points younger than 60 s, left for a later run: 1"
    assert "reconcile.repaired" in repaired.stderr
    operation_id = summary.rsplit(" ", 1)[1]
    assert operation_id in repaired.stderr
    # Only the young one is left inconsistent; it is no longer young once aged.
    assert after.stdout.splitlines()[:5] == check_lines(4, 7, 4)[:4] + ["media missing points: 1"]
    age(db, [young])
    invoke("reconcile", "--repair")
    assert invoke("check").stdout.splitlines() == [*check_lines(3, 6, 3), "consistent"]
    with db.unit_of_work() as uow:
        assert set(uow.session.scalars(select(Media.id))) == set(ids) - {no_hd, one_ld, young}
    operation = get_operation(db, owner="acme", operation_id=operation_id)
    assert operation.reason == "repair:missing_points"
    assert operation.status == OperationStatus.COMPLETED
    assert sorted(operation.deleted_ids) == [no_hd, one_ld]
    assert operation.failed == {}
    with db.unit_of_work() as uow:
        stored = uow.session.get(Operation, operation_id)
        assert stored is not None
        assert (stored.owner, stored.api_key_id) == ("acme", None)


def test_reconcile_without_missing_points_says_nothing_about_them(invoke: Invoke) -> None:
    seeded(invoke, 3)

    result = invoke("reconcile", "--repair")

    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [NOTHING_ELSE]
