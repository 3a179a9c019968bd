"""The deletion service against a simple model, on real SQLite and real qdrant-edge, with
vector-store faults switched on and off at random between steps."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    initialize,
    invariant,
    rule,
    run_state_machine_as_test,
)
from sqlalchemy import select

from tests.faults import FlakyVectors
from wickson_batch.db import Database
from wickson_batch.models import Media, MediaState, utcnow
from wickson_batch.services import cleanup, deletion, keys, media
from wickson_batch.services.errors import IdempotencyKeyReused
from wickson_batch.vectors.base import SPACES, Space
from wickson_batch.vectors.edge import EdgeIndex

DIMS: dict[Space, int] = {"hd": 4, "ld": 2}
OWNERS = ("alice", "bob")
UNKNOWN = tuple(f"vec-unknown-{n}" for n in range(3))
IDEMPOTENCY_KEYS = ("key-a", "key-b", "key-c")
# Sent by the other owner now and then: most batches should find something to delete.
FOREIGN = st.sampled_from([False, False, True])


@dataclass(frozen=True)
class Modelled:
    """What the model knows of a media it created."""

    owner: str
    hd: int
    ld: int

    def count(self, space: Space) -> int:
        return self.hd if space == "hd" else self.ld


@dataclass(frozen=True)
class Answer:
    """The part of a batch answer that a replay must repeat exactly."""

    operation_id: str
    deleted: tuple[str, ...]
    failed: tuple[tuple[str, str], ...]


def answer_of(outcome: deletion.BatchOutcome) -> Answer:
    return Answer(outcome.operation_id, tuple(outcome.deleted_ids), tuple(outcome.failed.items()))


def unique(ids: list[str]) -> list[str]:
    """Drop repeats, first occurrence kept, as the API does before calling the service."""
    return list(dict.fromkeys(ids))


def one_vector(dim: int, seed: int) -> list[float]:
    return [float((seed + i) % 5 + 1) for i in range(dim)]


class DeletionMachine(RuleBasedStateMachine):
    """Creates media, deletes batches (overlapping, unknown and foreign ids, retries with an
    Idempotency-Key, dry runs), drains cleanup, and fails the vector store at will."""

    # One real vector store per test: set by the test before the machine runs.
    store: EdgeIndex

    media_ids = Bundle("media_ids")

    def __init__(self) -> None:
        super().__init__()
        self.folder = tempfile.mkdtemp(prefix="wickson-machine-")
        self.db = Database(f"sqlite:///{Path(self.folder) / 'machine.db'}")
        self.db.upgrade_schema()
        self.vectors = FlakyVectors(self.store, spaces=())
        self.vectors.failing = False
        self.key_ids = {owner: keys.create_key(self.db, owner=owner)[0].id for owner in OWNERS}
        self.live: dict[str, Modelled] = {}
        self.known: dict[str, Modelled] = {}  # every media ever created, live or not
        self.reported_deleted: set[str] = set()
        self.answers: dict[tuple[str, str], tuple[str, Answer]] = {}
        self.clock_offset = timedelta(0)
        self.seed = 0

    def teardown(self) -> None:
        try:
            # However the run went, once the store is back a drain restores the invariant.
            self.recover_and_drain()
        finally:
            # The store outlives the machine: leave it empty for the next one.
            for space in SPACES:
                ids = [point.id for page in self.store.scan(space) for point in page]
                self.store.delete(space, ids)
            self.db.dispose()
            shutil.rmtree(self.folder, ignore_errors=True)

    @initialize(failing=st.sets(st.sampled_from(SPACES)))
    def store_starts_empty(self, failing: set[Space]) -> None:
        assert (self.store.count("hd"), self.store.count("ld")) == (0, 0)
        self.vector_store_faults(failing)

    # Rules

    @rule(
        target=media_ids,
        owner=st.sampled_from(OWNERS),
        hd=st.integers(0, 3),
        ld=st.integers(0, 3),
    )
    def create(self, owner: str, hd: int, ld: int) -> str:
        hd = hd or (0 if ld else 1)
        self.seed += 1
        view = media.create_media(
            self.db,
            self.vectors,
            owner=owner,
            hd_vectors=[one_vector(DIMS["hd"], self.seed + n) for n in range(hd)],
            ld_vectors=[one_vector(DIMS["ld"], self.seed + n) for n in range(ld)],
        )
        self.live[view.media_id] = self.known[view.media_id] = Modelled(owner, hd, ld)
        return view.media_id

    @rule(failing=st.sets(st.sampled_from(SPACES)))
    def vector_store_faults(self, failing: set[Space]) -> None:
        self.vectors.spaces = set(failing)
        self.vectors.failing = bool(failing)

    def request(
        self, chosen: list[str], unknown: list[str], foreign: bool
    ) -> tuple[str, list[str]]:
        """Return the caller (the first id's owner, or the other one) and the unique ids."""
        owner = self.known[chosen[0]].owner
        if foreign:
            owner = OWNERS[1 - OWNERS.index(owner)]
        return owner, unique(chosen + unknown)

    @rule(
        chosen=st.lists(media_ids, min_size=1, max_size=6),
        unknown=st.lists(st.sampled_from(UNKNOWN), max_size=2),
        foreign=FOREIGN,
        key=st.none() | st.sampled_from(IDEMPOTENCY_KEYS),
        reason=st.none() | st.sampled_from(["outdated_content", "gdpr"]),
    )
    def delete_batch(
        self,
        chosen: list[str],
        unknown: list[str],
        foreign: bool,
        key: str | None,
        reason: str | None,
    ) -> None:
        owner, ids = self.request(chosen, unknown, foreign)
        fingerprint = deletion.request_fingerprint(ids, reason)
        earlier = self.answers.get((owner, key)) if key else None
        if earlier is not None and earlier[0] != fingerprint:
            with pytest.raises(IdempotencyKeyReused):
                self._delete(owner, ids, key, reason)
            return
        outcome = self._delete(owner, ids, key, reason)
        if earlier is not None:
            # The same request again: the first answer, and nothing more deleted.
            assert outcome.replayed
            assert answer_of(outcome) == earlier[1]
            return
        assert not outcome.replayed
        expected = [m for m in ids if m in self.live and self.live[m].owner == owner]
        assert outcome.deleted_ids == expected
        assert outcome.failed == {m: "NOT_FOUND" for m in ids if m not in expected}
        assert not self.reported_deleted & set(expected), "an id was reported deleted twice"
        self.reported_deleted.update(expected)
        failing = self.vectors.spaces if self.vectors.failing else set()
        for space in SPACES:
            removed = 0 if space in failing else sum(self.live[m].count(space) for m in expected)
            assert outcome.vectors_removed[space] == removed
        assert outcome.cleanup_pending == (expected if failing and expected else [])
        for media_id in expected:
            del self.live[media_id]
        if key:
            self.answers[(owner, key)] = (fingerprint, answer_of(outcome))

    def _delete(
        self, owner: str, ids: list[str], key: str | None, reason: str | None
    ) -> deletion.BatchOutcome:
        return deletion.delete_batch(
            self.db,
            self.vectors,
            owner=owner,
            media_ids=ids,
            reason=reason,
            api_key_id=self.key_ids[owner],
            idempotency_key=key,
        )

    @rule(
        chosen=st.lists(media_ids, min_size=1, max_size=6),
        unknown=st.lists(st.sampled_from(UNKNOWN), max_size=2),
        foreign=FOREIGN,
    )
    def dry_run(self, chosen: list[str], unknown: list[str], foreign: bool) -> None:
        owner, ids = self.request(chosen, unknown, foreign)
        before = (self.store.count("hd"), self.store.count("ld"))

        outcome = deletion.preview_batch(self.db, owner=owner, media_ids=ids)

        expected = [m for m in ids if m in self.live and self.live[m].owner == owner]
        assert outcome.deleted_ids == expected
        assert outcome.failed == {m: "NOT_FOUND" for m in ids if m not in expected}
        for space in SPACES:
            assert outcome.vectors_removed[space] == sum(
                self.live[m].count(space) for m in expected
            )
        assert (self.store.count("hd"), self.store.count("ld")) == before

    @rule()
    def drain(self) -> None:
        # An hour on per drain: every postponed task is due again (backoff caps at 5 min).
        self.clock_offset += timedelta(hours=1)
        cleanup.drain_cleanup(
            self.db, self.vectors, grace=timedelta(0), now=utcnow() + self.clock_offset
        )
        if not self.vectors.failing:
            self.assert_store_matches_the_model()

    @rule()
    def recover_and_drain(self) -> None:
        self.vectors.failing = False
        self.drain()

    # Invariants

    @invariant()
    def sql_agrees_with_the_model_on_live_media(self) -> None:
        with self.db.unit_of_work() as uow:
            rows = uow.session.execute(select(Media.id, Media.owner, Media.state))
            in_sql = {row.id: row.owner for row in rows if row.state == MediaState.LIVE}
        assert in_sql == {m: known.owner for m, known in self.live.items()}

    @invariant()
    def live_media_keep_all_their_points(self) -> None:
        # Whatever failed, a media still live has every point it was created with.
        for media_id, known in self.live.items():
            for space in SPACES:
                assert self.store.count(space, media_id) == known.count(space)

    def assert_store_matches_the_model(self) -> None:
        """After a healthy drain: no point of a gone media, and no task left."""
        assert cleanup.pending_cleanup_count(self.db) == 0
        for media_id in self.known.keys() - self.live.keys():
            assert (self.store.count("hd", media_id), self.store.count("ld", media_id)) == (0, 0)
        for space in SPACES:
            assert self.store.count(space) == sum(m.count(space) for m in self.live.values())


@pytest.fixture
def edge_store(tmp_path: Path) -> Iterator[EdgeIndex]:
    store = EdgeIndex(str(tmp_path), DIMS)
    store.ensure()
    yield store
    store.close()


def test_deletion_service_matches_the_model_under_vector_faults(edge_store: EdgeIndex) -> None:
    machine: Any = DeletionMachine
    machine.store = edge_store
    run_state_machine_as_test(
        DeletionMachine,
        settings=settings(
            max_examples=40,
            stateful_step_count=20,
            deadline=None,
            database=None,
            suppress_health_check=[HealthCheck.too_slow],
        ),
    )
