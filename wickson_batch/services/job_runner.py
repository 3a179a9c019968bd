"""The deletion-job runner: a thread in each server process that runs jobs chunk by chunk.

A runner holds a lease on the job it runs (`lease_holder` until `lease_expires_at`), taken
in SQL (`FOR UPDATE SKIP LOCKED` on PostgreSQL, a conditional UPDATE on SQLite) and renewed
before every chunk; a lease left to expire (its process died) is taken over by any runner.
Every write a runner makes is fenced by its lease, so a runner that lost its lease changes
nothing more.

The manifest is resolved once, in the transaction that moves the job to `processing`. Each
chunk then goes through `deletion.delete_batch` (section 4): its deciding transaction also
marks the chunk's manifest items and adds to the job's counters, so that a crash can never
report an id twice, nor lose one.
"""

from __future__ import annotations

import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import structlog
from sqlalchemy import func, insert, literal, or_, select, text, update
from sqlalchemy.orm import Session

from ..db import Database
from ..models import DeletionJob, DeletionJobItem, Media, utcnow
from ..protocol import ErrorCode, FailureReason, ItemStatus, JobStatus
from ..vectors.base import VectorIndex
from .deletion import BatchOutcome, delete_batch
from .errors import STORE_ERRORS
from .jobs import JobView, log_state, matched_ids
from .selection import parse_selection

log = structlog.get_logger("wickson_batch")

RUNNABLE = (JobStatus.QUEUED, JobStatus.PROCESSING)
# How many manifest ids a named-id insert writes per statement.
INSERT_BATCH = 1_000


class LeaseLost(Exception):
    """Another runner holds the job now (this one's lease expired): stop touching it."""


@dataclass(frozen=True, slots=True)
class RunnerSettings:
    """How a runner works (config.Settings' JOB_* values)."""

    chunk_size: int = 500
    max_media: int = 10_000_000
    max_media_per_second: float = 20_000.0
    lease_seconds: float = 30.0
    poll_interval_seconds: float = 1.0
    points_per_call: int = 1_000


# Told of every chunk a runner has finished: its job's id, the chunk's outcome, the seconds
# it took and the seconds until the next one may start (its throttle included); and told
# (outcome None) when the runner's job has ended.
ChunkObserver = Callable[[str, BatchOutcome | None, float, float], None]


def new_holder() -> str:
    """Return a lease-holder name unique to this runner: host, process, and a nonce."""
    return f"{socket.gethostname()[:64]}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def _lease(now: datetime, seconds: float) -> datetime:
    return now + timedelta(seconds=seconds)


def claim_next_job(
    db: Database, holder: str, lease_seconds: float, now: datetime | None = None
) -> str | None:
    """Take the lease on the oldest runnable job no other runner holds; return its id."""
    now = now or utcnow()
    # Its own lease too: a job this runner left after an error is resumed at once.
    free = or_(
        DeletionJob.lease_holder.is_(None),
        DeletionJob.lease_expires_at < now,
        DeletionJob.lease_holder == holder,
    )
    candidates = (
        select(DeletionJob.id)
        .where(DeletionJob.status.in_(RUNNABLE), free)
        .order_by(DeletionJob.created_at, DeletionJob.id)
        .limit(1)
    )
    with db.unit_of_work() as uow:
        if db.dialect == "postgresql":
            candidates = candidates.with_for_update(skip_locked=True)
        job_id = uow.session.scalar(candidates)
        if job_id is None:
            return None
        # On SQLite the condition is the lock: of two runners, one UPDATE matches.
        taken = uow.session.execute(
            update(DeletionJob)
            .where(DeletionJob.id == job_id, DeletionJob.status.in_(RUNNABLE), free)
            .values(lease_holder=holder, lease_expires_at=_lease(now, lease_seconds))
            .execution_options(synchronize_session=False)
        )
        uow.commit()
    if not getattr(taken, "rowcount", 0):
        return None
    return str(job_id)


def _fenced(job_id: str, holder: str) -> Any:
    return (DeletionJob.id == job_id) & (DeletionJob.lease_holder == holder)


def renew_lease(
    db: Database, job_id: str, holder: str, lease_seconds: float, now: datetime | None = None
) -> None:
    """Extend this runner's lease on a job; LeaseLost if it is not this runner's any more."""
    now = now or utcnow()
    with db.unit_of_work() as uow:
        renewed = uow.session.execute(
            update(DeletionJob)
            .where(_fenced(job_id, holder), DeletionJob.status.in_(RUNNABLE))
            .values(lease_expires_at=_lease(now, lease_seconds))
            .execution_options(synchronize_session=False)
        )
        uow.commit()
    if not getattr(renewed, "rowcount", 0):
        raise LeaseLost(job_id)


def release_lease(db: Database, job_id: str, holder: str) -> None:
    """Give the lease up (a clean stop): another runner may take the job at once."""
    with db.unit_of_work() as uow:
        uow.session.execute(
            update(DeletionJob)
            .where(_fenced(job_id, holder))
            .values(lease_holder=None, lease_expires_at=None)
            .execution_options(synchronize_session=False)
        )
        uow.commit()


def _end(
    session: Session,
    job_id: str,
    holder: str,
    status: str,
    now: datetime,
    **values: Any,
) -> None:
    ended = session.execute(
        update(DeletionJob)
        .where(_fenced(job_id, holder), DeletionJob.status.in_(RUNNABLE))
        .values(
            status=status,
            finished_at=now,
            updated_at=now,
            lease_holder=None,
            lease_expires_at=None,
            **values,
        )
        .execution_options(synchronize_session=False)
    )
    if not getattr(ended, "rowcount", 0):
        raise LeaseLost(job_id)


def _view(db: Database, job_id: str) -> tuple[JobView, str]:
    with db.unit_of_work() as uow:
        job = uow.session.get(DeletionJob, job_id)
        assert job is not None
        return JobView.of(job), job.owner


def resolve_manifest(
    db: Database,
    job_id: str,
    holder: str,
    *,
    max_media: int,
    now: datetime | None = None,
) -> str:
    """Resolve a queued job's selection into its manifest, once; return the new status.

    The named ids come first, in the order given (each once), then the matched ones by
    (created_at, id). All in one transaction with the move to `processing`, which fixes
    `total`; more than `max_media` rejects the job instead, storing nothing.
    """
    now = now or utcnow()
    with db.unit_of_work() as uow:
        session = uow.session
        if db.dialect == "postgresql":
            session.execute(text("SET LOCAL statement_timeout = 0"))  # a large manifest
        job = session.get(DeletionJob, job_id)
        if job is None or job.lease_holder != holder or job.status != JobStatus.QUEUED:
            raise LeaseLost(job_id)
        selection = parse_selection(job.selection)
        named = list(selection.ids)  # each once, in the order given
        matched = matched_ids(job.owner, selection)
        if matched is not None and named:
            matched = matched.where(Media.id.not_in(named))
        extra = 0
        if matched is not None:
            over = matched.order_by(None).limit(max_media + 1).subquery()
            extra = int(session.scalar(select(func.count()).select_from(over)) or 0)
        total = len(named) + extra
        if total > max_media:
            _end(
                session,
                job_id,
                holder,
                JobStatus.REJECTED,
                now,
                error_code=ErrorCode.JOB_TOO_LARGE,
                error_message=(
                    f"The selection resolved to more than {max_media} media (JOB_MAX_MEDIA); "
                    "split it into smaller jobs"
                ),
            )
            uow.commit()
            return JobStatus.REJECTED
        for start in range(0, len(named), INSERT_BATCH):
            session.execute(
                insert(DeletionJobItem),
                [
                    {
                        "job_id": job_id,
                        "position": start + n,
                        "media_id": media_id,
                        "status": ItemStatus.PENDING,
                    }
                    for n, media_id in enumerate(named[start : start + INSERT_BATCH])
                ],
            )
        if matched is not None and extra:
            # Positions after the named ids, in the matched ids' own order.
            rows = matched.order_by(None).with_only_columns(
                literal(job_id),
                func.row_number().over(order_by=(Media.created_at, Media.id)) + (len(named) - 1),
                Media.id,
                literal(ItemStatus.PENDING),
            )
            session.execute(
                insert(DeletionJobItem).from_select(
                    ["job_id", "position", "media_id", "status"], rows
                )
            )
            # Counted again: the rows may have changed since the first count (and a
            # driver's rowcount for INSERT ... SELECT is not always given).
            total = int(
                session.scalar(
                    select(func.count())
                    .select_from(DeletionJobItem)
                    .where(DeletionJobItem.job_id == job_id)
                )
                or 0
            )
        moved = session.execute(
            update(DeletionJob)
            .where(_fenced(job_id, holder), DeletionJob.status == JobStatus.QUEUED)
            .values(status=JobStatus.PROCESSING, total=total, updated_at=now)
            .execution_options(synchronize_session=False)
        )
        if not getattr(moved, "rowcount", 0):
            raise LeaseLost(job_id)
        uow.commit()
    return JobStatus.PROCESSING


def _record_chunk(
    job_id: str, holder: str, positions: dict[str, int], now: Callable[[], datetime]
) -> Callable[[Session, BatchOutcome], None]:
    """The deciding transaction's hook: the chunk's items and the job's counters."""

    def record(session: Session, outcome: BatchOutcome) -> None:
        pending = DeletionJobItem.status == ItemStatus.PENDING
        mine = DeletionJobItem.job_id == job_id
        marked = 0
        deleted = [positions[item.media_id] for item in outcome.deleted]
        failed = [positions[media_id] for media_id in outcome.failed]
        for status, chosen, reason in (
            (ItemStatus.DELETED, deleted, None),
            (ItemStatus.FAILED, failed, FailureReason.NOT_FOUND),
        ):
            if not chosen:
                continue
            result = session.execute(
                update(DeletionJobItem)
                .where(mine, pending, DeletionJobItem.position.in_(chosen))
                .values(status=status, reason=reason, operation_id=outcome.operation_id)
                .execution_options(synchronize_session=False)
            )
            marked += int(getattr(result, "rowcount", 0))
        counted = session.execute(
            update(DeletionJob)
            .where(_fenced(job_id, holder), DeletionJob.status == JobStatus.PROCESSING)
            .values(
                deleted=DeletionJob.deleted + len(deleted),
                failed=DeletionJob.failed + len(failed),
                hd_vectors=DeletionJob.hd_vectors + sum(i.hd_count for i in outcome.deleted),
                ld_vectors=DeletionJob.ld_vectors + sum(i.ld_count for i in outcome.deleted),
                updated_at=now(),
            )
            .execution_options(synchronize_session=False)
        )
        # Another runner decided these items (this one's lease ran out): roll it all back.
        if marked != len(positions) or not getattr(counted, "rowcount", 0):
            raise LeaseLost(job_id)

    return record


def run_chunk(
    db: Database,
    vectors: VectorIndex,
    job_id: str,
    holder: str,
    *,
    chunk_size: int,
    points_per_call: int | None = None,
    clock: Callable[[], datetime] = utcnow,
) -> BatchOutcome | None:
    """Delete the next chunk of a processing job's manifest; None when none is left."""
    with db.unit_of_work() as uow:
        job = uow.session.get(DeletionJob, job_id)
        if job is None or job.lease_holder != holder:
            raise LeaseLost(job_id)
        owner, reason, api_key_id = job.owner, job.reason, job.api_key_id
        rows = list(
            uow.session.execute(
                select(DeletionJobItem.position, DeletionJobItem.media_id)
                .where(
                    DeletionJobItem.job_id == job_id,
                    DeletionJobItem.status == ItemStatus.PENDING,
                )
                .order_by(DeletionJobItem.position)
                .limit(chunk_size)
            )
        )
    if not rows:
        return None
    positions = {row.media_id: row.position for row in rows}
    return delete_batch(
        db,
        vectors,
        owner=owner,
        media_ids=list(positions),
        reason=reason,
        api_key_id=api_key_id,
        clock=clock,
        on_decided=_record_chunk(job_id, holder, positions, clock),
        max_points_per_call=points_per_call,
        log_fields={"job_id": job_id},
    )


class JobRunner:
    """A background thread that claims deletion jobs and runs them, one at a time."""

    def __init__(
        self,
        db: Database,
        vectors: VectorIndex,
        *,
        settings: RunnerSettings,
        observers: list[ChunkObserver] | None = None,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.db = db
        self.vectors = vectors
        self.settings = settings
        self.observers = observers if observers is not None else []
        self.clock = clock
        self.holder = new_holder()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="wickson-jobs", daemon=True)

    def start(self) -> None:
        """Start the thread."""
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Ask the thread to stop after its chunk at work, and wait for it."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def run_once(self) -> str | None:
        """Claim one job and run it until it ends, the lease is lost, or the runner stops."""
        job_id = claim_next_job(self.db, self.holder, self.settings.lease_seconds, self.clock())
        if job_id is None:
            return None
        try:
            self.run_job(job_id)
        except LeaseLost:
            log.warning("job.lease_lost", job_id=job_id, holder=self.holder)
        finally:
            self._notify(job_id, None, 0.0, 0.0)
        return job_id

    def run_job(self, job_id: str) -> None:
        """Run a job this runner holds the lease on."""
        view, owner = _view(self.db, job_id)
        log.info("job.claimed", job_id=job_id, holder=self.holder, status=view.status)
        if view.status == JobStatus.QUEUED and not view.cancel_requested:
            status = resolve_manifest(
                self.db,
                job_id,
                self.holder,
                max_media=self.settings.max_media,
                now=self.clock(),
            )
            view, _ = _view(self.db, job_id)
            log_state(view, owner, f"job.{status}")
            if status == JobStatus.REJECTED:
                return
        while True:
            if self._stop.is_set():
                release_lease(self.db, job_id, self.holder)
                return
            view, _ = _view(self.db, job_id)
            if view.cancel_requested:
                self._finish(job_id, owner, JobStatus.CANCELLED)
                return
            renew_lease(self.db, job_id, self.holder, self.settings.lease_seconds, self.clock())
            started = time.monotonic()
            outcome = run_chunk(
                self.db,
                self.vectors,
                job_id,
                self.holder,
                chunk_size=self.settings.chunk_size,
                points_per_call=self.settings.points_per_call,
                clock=self.clock,
            )
            if outcome is None:
                self._finish(job_id, owner, JobStatus.DONE)
                return
            elapsed = time.monotonic() - started
            self._throttle(job_id, len(outcome.deleted) + len(outcome.failed), elapsed)
            self._notify(job_id, outcome, elapsed, time.monotonic() - started)

    def _notify(self, job_id: str, outcome: BatchOutcome | None, work: float, cycle: float) -> None:
        for observe in self.observers:
            try:
                observe(job_id, outcome, work, cycle)
            except Exception:  # a metric must never stop a job
                log.exception("job.observer_failed", job_id=job_id)

    def _finish(self, job_id: str, owner: str, status: str) -> None:
        with self.db.unit_of_work() as uow:
            _end(uow.session, job_id, self.holder, status, self.clock())
            uow.commit()
        view, _ = _view(self.db, job_id)
        log_state(view, owner, f"job.{status}")

    def _throttle(self, job_id: str, done: int, elapsed: float) -> None:
        """Wait so that the runner deletes at most JOB_MAX_MEDIA_PER_SECOND, renewing the lease."""
        pause = done / self.settings.max_media_per_second - elapsed
        step = self.settings.lease_seconds / 3
        while pause > 0 and not self._stop.is_set():
            self._stop.wait(min(pause, step))
            pause -= step
            if pause > 0:
                renew_lease(self.db, job_id, self.holder, self.settings.lease_seconds)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                if self.run_once() is not None:
                    continue  # look for the next job at once
            except STORE_ERRORS as error:  # a store down: expected; the next look retries
                log.warning("job.runner_failed", holder=self.holder, error=str(error))
            except Exception:  # keep the thread alive; the lease lapses and the job resumes
                log.exception("job.runner_failed", holder=self.holder)
            self._stop.wait(self.settings.poll_interval_seconds)
