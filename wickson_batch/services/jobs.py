"""Background deletion jobs (DESIGN section 9): create, read, list, page items, cancel, preview.

A job is stored `queued` with its selection; the runner (services/job_runner.py) resolves it
into a manifest once and deletes it chunk by chunk. Everything here is a short transaction
on the SQL store; nothing here touches the vector store.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Generic, TypeVar

import structlog
from sqlalchemy import Select, and_, func, or_, select, update
from sqlalchemy.orm import Session

from ..db import Database
from ..models import DeletionJob, DeletionJobItem, Media, MediaState, utcnow
from ..protocol import FINISHED_JOB_STATUSES, JOB_STATUSES, ItemStatus, JobStatus
from .deletion import IdempotencyClaim, KeyTaken, claim_key, claimed_target
from .errors import IdempotencyKeyInUse, InvalidCursor, JobFinished, JobNotFound
from .selection import Selection, selected_ids

log = structlog.get_logger("wickson_batch")

# How many ids a dry run shows.
SAMPLE_SIZE = 20
DEFAULT_PAGE = 20
MAX_PAGE = 100


def matched_ids(owner: str, selection: Selection) -> Select[Any] | None:
    """The ids of `owner`'s live media a selection's object items match; None: it has none."""
    return selected_ids(owner, selection) if selection.items else None


def new_job_id() -> str:
    """Return a fresh, unguessable job id."""
    return f"job_{uuid.uuid4().hex}"


def job_fingerprint(selection: Selection, reason: str | None, cascade: bool) -> str:
    """Return the hash that tells whether a retried job creation is the same request."""
    canonical = json.dumps(
        {"deletion_job": selection.to_json(), "reason": reason, "cascade": cascade},
        separators=(",", ":"),
        sort_keys=True,
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class JobView:
    """A job as the API shows it."""

    job_id: str
    status: str
    reason: str | None
    cascade: bool
    created_at: datetime
    updated_at: datetime
    finished_at: datetime | None
    total: int | None
    deleted: int
    failed: int
    hd_vectors: int
    ld_vectors: int
    error_code: str | None
    error_message: str | None
    cancel_requested: bool

    @property
    def remaining(self) -> int | None:
        """Manifest ids not reached yet; None before the manifest is resolved."""
        return None if self.total is None else self.total - self.deleted - self.failed

    @classmethod
    def of(cls, job: DeletionJob) -> JobView:
        """Return the view of a stored job."""
        return cls(
            job.id,
            job.status,
            job.reason,
            job.cascade,
            job.created_at,
            job.updated_at,
            job.finished_at,
            job.total,
            job.deleted,
            job.failed,
            job.hd_vectors,
            job.ld_vectors,
            job.error_code,
            job.error_message,
            job.cancel_requested,
        )


@dataclass(frozen=True, slots=True)
class ItemView:
    """One manifest id's outcome."""

    media_id: str
    status: str
    reason: str | None
    operation_id: str | None


T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    """A page of a keyset-paged listing."""

    items: list[T]
    has_more: bool
    next_cursor: str | None


@dataclass(frozen=True, slots=True)
class JobPreview:
    """What a job would delete now: a dry run."""

    total: int
    hd_vectors: int
    ld_vectors: int
    sample: list[str]


# --- cursors ----------------------------------------------------------------------------


def encode_cursor(kind: str, values: Sequence[Any]) -> str:
    """Return an opaque cursor holding `values`, for the listing `kind` only."""
    raw = json.dumps([kind, *values], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _bad_cursor() -> InvalidCursor:
    return InvalidCursor(
        "Invalid cursor: pass the next_cursor of the previous page unchanged", "cursor"
    )


def decode_cursor(kind: str, cursor: str, arity: int) -> list[Any]:
    """Return the values of a cursor `encode_cursor(kind, ...)` made; else InvalidCursor."""
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        values = json.loads(base64.urlsafe_b64decode(padded.encode("ascii")))
    except (ValueError, binascii.Error, UnicodeError):
        raise _bad_cursor() from None
    if not isinstance(values, list) or len(values) != arity + 1 or values[0] != kind:
        raise _bad_cursor()
    return values[1:]


# --- reading ----------------------------------------------------------------------------


def _owned(session: Session, owner: str, job_id: str) -> DeletionJob:
    job = session.get(DeletionJob, job_id)
    if job is None or job.owner != owner:
        raise JobNotFound(job_id)
    return job


def get_job(db: Database, *, owner: str, job_id: str) -> JobView:
    """Return one of `owner`'s jobs; another owner's is not found."""
    with db.unit_of_work() as uow:
        return JobView.of(_owned(uow.session, owner, job_id))


def list_jobs(
    db: Database, *, owner: str, limit: int = DEFAULT_PAGE, cursor: str | None = None
) -> Page[JobView]:
    """Return a page of `owner`'s jobs, newest first (by created_at, then id)."""
    query = select(DeletionJob).where(DeletionJob.owner == owner)
    if cursor is not None:
        created, job_id = decode_cursor("jobs", cursor, 2)
        try:
            moment = datetime.fromisoformat(str(created))
        except ValueError:
            raise _bad_cursor() from None
        if moment.tzinfo is None or not isinstance(job_id, str):
            raise _bad_cursor()
        query = query.where(
            or_(
                DeletionJob.created_at < moment,
                and_(DeletionJob.created_at == moment, DeletionJob.id < job_id),
            )
        )
    query = query.order_by(DeletionJob.created_at.desc(), DeletionJob.id.desc()).limit(limit + 1)
    with db.unit_of_work() as uow:
        rows = list(uow.session.scalars(query))
    views = [JobView.of(job) for job in rows[:limit]]
    has_more = len(rows) > limit
    next_cursor = None
    if has_more:
        last = views[-1]
        next_cursor = encode_cursor("jobs", [last.created_at.isoformat(), last.job_id])
    return Page(views, has_more, next_cursor)


def list_items(
    db: Database,
    *,
    owner: str,
    job_id: str,
    status: str | None = None,
    limit: int = DEFAULT_PAGE,
    cursor: str | None = None,
) -> Page[ItemView]:
    """Return a page of a job's outcomes (deleted and failed ids), in manifest order.

    `status` keeps one kind of outcome; ids not reached yet are never listed.
    """
    statuses = [status] if status else [ItemStatus.DELETED, ItemStatus.FAILED]
    query = select(DeletionJobItem).where(
        DeletionJobItem.job_id == job_id, DeletionJobItem.status.in_(statuses)
    )
    if cursor is not None:
        (after,) = decode_cursor("items", cursor, 1)
        if type(after) is not int:
            raise _bad_cursor()
        query = query.where(DeletionJobItem.position > after)
    query = query.order_by(DeletionJobItem.position).limit(limit + 1)
    with db.unit_of_work() as uow:
        _owned(uow.session, owner, job_id)
        rows = list(uow.session.scalars(query))
    page = rows[:limit]
    has_more = len(rows) > limit
    views = [ItemView(r.media_id, r.status, r.reason, r.operation_id) for r in page]
    next_cursor = encode_cursor("items", [page[-1].position]) if has_more else None
    return Page(views, has_more, next_cursor)


def count_by_status(db: Database) -> dict[str, int]:
    """Return how many jobs there are in each status (every status, zeros included)."""
    with db.unit_of_work() as uow:
        rows = uow.session.execute(
            select(DeletionJob.status, func.count()).group_by(DeletionJob.status)
        )
        found = {str(status): int(count) for status, count in rows}
    return {status: found.get(status, 0) for status in JOB_STATUSES}


# --- changing ---------------------------------------------------------------------------


def create_job(
    db: Database,
    *,
    owner: str,
    selection: Selection,
    reason: str | None = None,
    cascade: bool = False,
    api_key_id: int | None = None,
    idempotency_key: str | None = None,
    clock: Callable[[], datetime] = utcnow,
) -> tuple[JobView, bool]:
    """Store a new `queued` job; return it and whether it is a replay of an earlier one.

    With an `idempotency_key` (scoped to `api_key_id`), the same request again answers the
    job the first one made; another request with the key raises IdempotencyKeyReused.
    """
    now = clock()
    claim: IdempotencyClaim | None = None
    if idempotency_key is not None:
        if api_key_id is None:
            raise ValueError("an Idempotency-Key is scoped to an API key: pass api_key_id")
        claim = IdempotencyClaim(
            api_key_id, idempotency_key, job_fingerprint(selection, reason, cascade)
        )
        replayed = _replayed_job(db, owner, claim, now)
        if replayed is not None:
            return replayed, True
    job_id = new_job_id()
    try:
        with db.unit_of_work() as uow:
            if claim is not None:
                claim_key(uow.session, claim, job_id, now)
            job = DeletionJob(
                id=job_id,
                owner=owner,
                api_key_id=api_key_id,
                status=JobStatus.QUEUED,
                selection=selection.to_json(),
                reason=reason,
                cascade=cascade,
                total=None,
                deleted=0,
                failed=0,
                hd_vectors=0,
                ld_vectors=0,
                created_at=now,
                updated_at=now,
                cancel_requested=False,
            )
            uow.session.add(job)
            uow.commit()
            view = JobView.of(job)
    except KeyTaken:
        assert claim is not None
        # A concurrent request with the same key created its job first: answer that one.
        replayed = _replayed_job(db, owner, claim, clock())
        if replayed is None:  # pragma: no cover - the winner's key vanished (expired)
            raise IdempotencyKeyInUse(claim.key) from None
        return replayed, True
    log_state(view, owner, "job.created")
    return view, False


def _replayed_job(
    db: Database, owner: str, claim: IdempotencyClaim, now: datetime
) -> JobView | None:
    with db.unit_of_work() as uow:
        target = claimed_target(uow.session, claim, now)
        if target is None:
            return None
        return JobView.of(_owned(uow.session, owner, target))


def cancel_job(
    db: Database, *, owner: str, job_id: str, clock: Callable[[], datetime] = utcnow
) -> JobView:
    """Cancel a job: at once if no runner holds it, else between two chunks.

    What was deleted stays deleted; the rest of the manifest stays live. A finished job
    raises JobFinished.
    """
    now = clock()
    with db.unit_of_work() as uow:
        job = _owned(uow.session, owner, job_id)
        if job.status in FINISHED_JOB_STATUSES:
            raise JobFinished(job_id, job.status)
        unheld = or_(DeletionJob.lease_holder.is_(None), DeletionJob.lease_expires_at < now)
        stopped = uow.session.execute(
            update(DeletionJob)
            .where(
                DeletionJob.id == job_id,
                DeletionJob.status.in_([JobStatus.QUEUED, JobStatus.PROCESSING]),
                unheld,
            )
            .values(
                status=JobStatus.CANCELLED,
                cancel_requested=True,
                finished_at=now,
                updated_at=now,
                lease_holder=None,
                lease_expires_at=None,
            )
            .execution_options(synchronize_session=False)
        )
        if not getattr(stopped, "rowcount", 0):
            # A runner is at work on it: it stops after the chunk it is deciding.
            uow.session.execute(
                update(DeletionJob)
                .where(DeletionJob.id == job_id)
                .values(cancel_requested=True, updated_at=now)
                .execution_options(synchronize_session=False)
            )
        uow.commit()
    with db.unit_of_work() as uow:
        view = JobView.of(_owned(uow.session, owner, job_id))
    if view.status == JobStatus.CANCELLED:
        log_state(view, owner, "job.cancelled")
    else:
        log.info("job.cancel_requested", job_id=job_id, owner=owner, status=view.status)
    return view


def preview_job(db: Database, *, owner: str, selection: Selection) -> JobPreview:
    """A dry run: what a job of `selection` would delete now (live media of `owner`)."""
    chosen = _live_of(owner, selection)
    with db.unit_of_work() as uow:
        totals = uow.session.execute(
            select(
                func.count(), func.coalesce(func.sum(Media.hd_count), 0),
                func.coalesce(func.sum(Media.ld_count), 0),
            ).where(Media.id.in_(chosen))
        ).one()  # fmt: skip
        sample = list(
            uow.session.scalars(
                select(Media.id)
                .where(Media.id.in_(chosen))
                .order_by(Media.created_at, Media.id)
                .limit(SAMPLE_SIZE)
            )
        )
    return JobPreview(int(totals[0]), int(totals[1]), int(totals[2]), sample)


def _live_of(owner: str, selection: Selection) -> Any:
    """The ids of `owner`'s live media the selection names or matches, as a query."""
    named = select(Media.id).where(
        Media.id.in_(list(selection.ids)), Media.owner == owner, Media.state == MediaState.LIVE
    )
    matched = matched_ids(owner, selection)
    if matched is None:
        return named
    return named.union(matched.order_by(None))


def log_state(view: JobView, owner: str, event: str) -> None:
    """Log one line for a job's change of state."""
    log.info(
        event,
        job_id=view.job_id,
        owner=owner,
        status=view.status,
        total=view.total,
        deleted=view.deleted,
        failed=view.failed,
        hd_vectors=view.hd_vectors,
        ld_vectors=view.ld_vectors,
        reason=view.reason,
        error_code=view.error_code,
    )
