"""The batch-deletion protocol: SQL decides, then the vectors go, then the tasks close."""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, cast

import structlog
from sqlalchemy import Table, bindparam, delete, insert, select, text, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from ..db import Database, DatabaseUnavailable, connection_lost
from ..models import CleanupTask, IdempotencyKey, Media, MediaState, Operation, utcnow
from ..protocol import FailureReason, OperationStatus
from ..vectors.base import SPACES, Space, VectorIndex
from .errors import DecisionUnknown, IdempotencyKeyInUse, IdempotencyKeyReused, OperationNotFound
from .points import MediaPoints, queue_cleanup, remove_points

log = structlog.get_logger("wickson_batch")


# An Idempotency-Key replays its first response for this long.
IDEMPOTENCY_WINDOW = timedelta(hours=24)


# Stored while the decision is committed and the request is still removing vectors; a
# lookup reports it as protocol.OperationStatus.IN_PROGRESS or INTERRUPTED, by its age.
RUNNING = "running"


def new_operation_id() -> str:
    """Return a fresh, unguessable operation id."""
    return f"batch_delete_{uuid.uuid4().hex}"


def request_fingerprint(media_ids: Sequence[str], reason: str | None) -> str:
    """Return the hash that tells whether a retried request is the same request."""
    canonical = json.dumps({"media_ids": list(media_ids), "reason": reason}, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class IdempotencyClaim:
    """An Idempotency-Key, the API key it is scoped to, and its request's fingerprint."""

    api_key_id: int
    key: str
    request_hash: str


# Called inside the deciding transaction, after the rows are deleted and before the commit,
# with the session and the outcome decided so far: whatever it writes commits (or fails)
# together with the deletion. A job records its chunk's item outcomes this way.
DecisionHook = Callable[[Session, "BatchOutcome"], None]


@dataclass(slots=True)
class BatchOutcome:
    """Everything a batch response reports."""

    operation_id: str
    timestamp: datetime
    reason: str | None
    deleted: list[MediaPoints]
    failed: dict[str, str]
    vectors_removed: dict[Space, int] = field(default_factory=lambda: {"hd": 0, "ld": 0})
    cleanup_pending: list[str] = field(default_factory=list)
    processing_time_ms: int = 0
    status: str = RUNNING
    replayed: bool = False
    dry_run: bool = False

    @property
    def deleted_ids(self) -> list[str]:
        """Return the deleted ids in request order."""
        return [item.media_id for item in self.deleted]


def _elapsed_ms(started: float) -> int:
    return round((time.perf_counter() - started) * 1000)


def _split(
    media_ids: Sequence[str], found: dict[str, Any]
) -> tuple[list[MediaPoints], dict[str, str]]:
    """Return the found ids (request order, with their counts) and the failed ones."""
    deleted = [
        MediaPoints(m, found[m].hd_count, found[m].ld_count) for m in media_ids if m in found
    ]
    failed = {m: FailureReason.NOT_FOUND for m in media_ids if m not in found}
    return deleted, failed


def _stored_result(outcome: BatchOutcome) -> dict[str, Any]:
    return {
        "status": outcome.status,
        "deleted": [[item.media_id, item.hd_count, item.ld_count] for item in outcome.deleted],
        "failed": outcome.failed,
        "hd_vectors": outcome.vectors_removed["hd"],
        "ld_vectors": outcome.vectors_removed["ld"],
        "cleanup_pending": outcome.cleanup_pending,
        "processing_time_ms": outcome.processing_time_ms,
    }


class KeyTaken(Exception):
    """Another request claimed the same Idempotency-Key first."""


def claim_key(session: Session, claim: IdempotencyClaim, target_id: str, now: datetime) -> None:
    """Claim `claim`'s key for `target_id` (an operation or a job) in `session`'s transaction.

    An expired claim of the same key is dropped first; a live one raises KeyTaken.
    """
    owned_key = (IdempotencyKey.api_key_id == claim.api_key_id) & (IdempotencyKey.key == claim.key)
    expired = IdempotencyKey.created_at <= now - IDEMPOTENCY_WINDOW
    session.execute(delete(IdempotencyKey).where(owned_key, expired))
    try:
        session.execute(
            insert(IdempotencyKey).values(
                api_key_id=claim.api_key_id,
                key=claim.key,
                request_hash=claim.request_hash,
                operation_id=target_id,
                created_at=now,
            )
        )
    except IntegrityError:  # the transaction is spoilt: the caller's block rolls it back
        raise KeyTaken from None


def claimed_target(session: Session, claim: IdempotencyClaim, now: datetime) -> str | None:
    """Return what `claim`'s key was first used for (an operation or job id), None if unused.

    The same key with another request (another body, or another route's) raises
    IdempotencyKeyReused.
    """
    row = session.execute(
        select(IdempotencyKey.request_hash, IdempotencyKey.operation_id).where(
            IdempotencyKey.api_key_id == claim.api_key_id,
            IdempotencyKey.key == claim.key,
            IdempotencyKey.created_at > now - IDEMPOTENCY_WINDOW,
        )
    ).first()
    if row is None:
        return None
    if row.request_hash != claim.request_hash:
        raise IdempotencyKeyReused(claim.key)
    return str(row.operation_id)


# The statements of a batch, built once as Core statements on the tables: neither built
# again nor given a new cache key per request, and without the ORM's bulk-statement layer
# (nothing of it is used: no objects are loaded or synchronised).
_MEDIA = cast(Table, Media.__table__)
_TASKS = cast(Table, CleanupTask.__table__)
_OPERATIONS = cast(Table, Operation.__table__)
_DELETE_LIVE = (
    delete(_MEDIA)
    .where(
        _MEDIA.c.id.in_(bindparam("ids", expanding=True)),
        _MEDIA.c.owner == bindparam("owner"),
        _MEDIA.c.state == MediaState.LIVE,
    )
    .returning(_MEDIA.c.id, _MEDIA.c.hd_count, _MEDIA.c.ld_count)
)
_INSERT_OPERATION = insert(_OPERATIONS)
_CLOSE_TASKS = delete(_TASKS).where(_TASKS.c.operation_id == bindparam("operation_id"))
_STORE_RESULT = (
    update(_OPERATIONS)
    .where(_OPERATIONS.c.id == bindparam("operation_id"))
    .values(result=bindparam("result"))
)


def _decide(
    db: Database,
    outcome: BatchOutcome,
    *,
    owner: str,
    api_key_id: int | None,
    media_ids: Sequence[str],
    claim: IdempotencyClaim | None,
    started: float,
    on_decided: DecisionHook | None = None,
) -> None:
    """Step 1: in one transaction, claim the key, delete the live rows, queue their cleanup."""
    now = outcome.timestamp
    with db.unit_of_work() as uow:
        session = uow.session
        if db.dialect == "postgresql":
            # Durable before any point is deleted, whatever the server's default: with
            # synchronous_commit off, a crash could bring back media acknowledged deleted
            # whose vectors are already gone.
            session.execute(text("SET LOCAL synchronous_commit = on"))
        if claim is not None:
            # First in the transaction: a concurrent request with the same key waits on
            # this row and fails here, before it has deleted anything.
            claim_key(session, claim, outcome.operation_id, now)
        rows = session.execute(_DELETE_LIVE, {"ids": list(media_ids), "owner": owner})
        found = {row.id: row for row in rows}
        outcome.deleted, outcome.failed = _split(media_ids, found)
        if outcome.deleted:
            queue_cleanup(session, outcome.deleted, outcome.operation_id, now)
        else:  # nothing left to do after this commit: the operation is complete now
            outcome.status = OperationStatus.COMPLETED
            outcome.processing_time_ms = _elapsed_ms(started)
        session.execute(
            _INSERT_OPERATION,
            {
                "id": outcome.operation_id,
                "owner": owner,
                "api_key_id": api_key_id,
                "reason": outcome.reason,
                "created_at": now,
                "requested": len(media_ids),
                "deleted": len(outcome.deleted),
                "failed": len(outcome.failed),
                "result": _stored_result(outcome),
            },
        )
        if on_decided is not None:
            on_decided(session, outcome)
        uow.commit()


# How often, and how far apart, the decision is re-read after the connection was lost.
REREAD_ATTEMPTS = 3
REREAD_PAUSE_SECONDS = 0.2


def _decided(db: Database, operation_id: str) -> bool | None:
    """Whether the operation row exists (its decision committed); None: cannot be read."""
    for attempt in range(REREAD_ATTEMPTS):
        try:
            with db.unit_of_work() as uow:
                found = uow.session.execute(
                    select(Operation.id).where(Operation.id == operation_id)
                ).first()
            return found is not None
        except DatabaseUnavailable:
            if attempt + 1 < REREAD_ATTEMPTS:
                time.sleep(REREAD_PAUSE_SECONDS)
    return None


def _decide_or_reread(db: Database, outcome: BatchOutcome, **decide: Any) -> None:
    """Run `_decide`; if the connection was lost on the way, answer what the database holds.

    The commit may have been applied even though its answer never came back: the operation
    row, written in the same transaction, tells. Present: the batch is decided, continue.
    Absent: nothing was changed (503). Unreadable: the outcome is unknown (503 naming it).
    """
    try:
        _decide(db, outcome, **decide)
    except DatabaseUnavailable as error:
        if not connection_lost(error.__cause__ or error):
            raise
        decided = _decided(db, outcome.operation_id)
        log.warning(
            "operation.commit_connection_lost",
            operation_id=outcome.operation_id,
            decided={True: "yes", False: "no", None: "unknown"}[decided],
        )
        if decided is None:
            raise DecisionUnknown(outcome.operation_id) from error
        if not decided:
            raise


def _finish(db: Database, outcome: BatchOutcome) -> None:
    """Step 3: store the answer; when every point is gone, drop the operation's tasks."""
    try:
        with db.unit_of_work() as uow:
            if not outcome.cleanup_pending:
                uow.session.execute(_CLOSE_TASKS, {"operation_id": outcome.operation_id})
            uow.session.execute(
                _STORE_RESULT,
                {"operation_id": outcome.operation_id, "result": _stored_result(outcome)},
            )
            uow.commit()
    except Exception as error:  # the batch is decided; its answer must still reach the caller
        # The tasks stay, the reconciler repeats the (idempotent) point deletion, and a
        # lookup or replay reports the operation from its tasks.
        log.warning("operation.finish_failed", operation_id=outcome.operation_id, error=str(error))


def _outcome_of(
    session: Any, operation: Operation, now: datetime, in_flight: timedelta
) -> BatchOutcome:
    """Rebuild the answer of a stored operation."""
    result = operation.result
    outcome = BatchOutcome(
        operation.id,
        operation.created_at,
        operation.reason,
        [MediaPoints(m, hd, ld) for m, hd, ld in result["deleted"]],
        dict(result["failed"]),
        status=result["status"],
    )
    if outcome.status == OperationStatus.COMPLETED:
        outcome.vectors_removed = {"hd": result["hd_vectors"], "ld": result["ld_vectors"]}
        outcome.cleanup_pending = list(result["cleanup_pending"])
        outcome.processing_time_ms = result["processing_time_ms"]
        return outcome
    # Still marked running: its request is at work, or its process stopped before it
    # answered. What its tasks no longer hold is gone from the vector store.
    queued = set(
        session.scalars(
            select(CleanupTask.media_id).where(CleanupTask.operation_id == operation.id)
        )
    )
    outcome.cleanup_pending = [m for m in outcome.deleted_ids if m in queued]
    for space in SPACES:
        outcome.vectors_removed[space] = sum(
            item.count(space) for item in outcome.deleted if item.media_id not in queued
        )
    young = now - operation.created_at < in_flight
    outcome.status = OperationStatus.IN_PROGRESS if young else OperationStatus.INTERRUPTED
    return outcome


def _replay(
    db: Database, claim: IdempotencyClaim, now: datetime, in_flight: timedelta
) -> BatchOutcome | None:
    """Return the first answer given for this key, or None if the key is new."""
    with db.unit_of_work() as uow:
        operation_id = claimed_target(uow.session, claim, now)
        if operation_id is None:
            return None
        operation = uow.session.get(Operation, operation_id)
        if operation is None:  # pragma: no cover - the hash matched, so it is a batch's key
            raise IdempotencyKeyReused(claim.key)
        outcome = _outcome_of(uow.session, operation, now, in_flight)
    if outcome.status == OperationStatus.IN_PROGRESS:
        raise IdempotencyKeyInUse(claim.key)
    outcome.replayed = True
    return outcome


def delete_batch(
    db: Database,
    vectors: VectorIndex,
    *,
    owner: str,
    media_ids: Sequence[str],
    reason: str | None = None,
    api_key_id: int | None = None,
    idempotency_key: str | None = None,
    in_flight: timedelta = timedelta(seconds=60),
    clock: Callable[[], datetime] = utcnow,
    on_decided: DecisionHook | None = None,
    max_points_per_call: int | None = None,
    log_fields: dict[str, Any] | None = None,
) -> BatchOutcome:
    """Delete the caller's media among `media_ids` (unique, in request order) and their points.

    With an `idempotency_key` (scoped to `api_key_id`), a repeat of the same request replays
    the first answer instead of deleting again. `in_flight` is how long a request may take:
    an operation still running after that is reported as interrupted, not in progress.
    `on_decided` writes into the deciding transaction (see DecisionHook); the points go in
    calls of at most `max_points_per_call` ids (None: one call per collection); its log
    line carries `log_fields` too (a job's chunk names its job).
    """
    started = time.perf_counter()
    now = clock()
    claim: IdempotencyClaim | None = None
    if idempotency_key is not None:
        if api_key_id is None:
            raise ValueError("an Idempotency-Key is scoped to an API key: pass api_key_id")
        claim = IdempotencyClaim(
            api_key_id, idempotency_key, request_fingerprint(media_ids, reason)
        )
        replayed = _replay(db, claim, now, in_flight)
        if replayed is not None:
            _log(replayed, owner, len(media_ids))
            return replayed
    outcome = BatchOutcome(new_operation_id(), now, reason, [], {})
    try:
        _decide_or_reread(
            db,
            outcome,
            owner=owner,
            api_key_id=api_key_id,
            media_ids=media_ids,
            claim=claim,
            started=started,
            on_decided=on_decided,
        )
    except KeyTaken:
        assert claim is not None
        # A concurrent request with the same key decided first: answer as a retry would.
        replayed = _replay(db, claim, clock(), in_flight)
        if replayed is None:  # pragma: no cover - the winner's row vanished (expired)
            raise IdempotencyKeyInUse(claim.key) from None
        _log(replayed, owner, len(media_ids))
        return replayed
    if outcome.deleted:
        errors = remove_points(vectors, outcome.deleted, max_points_per_call)
        for space in SPACES:
            if errors[space] is None:
                outcome.vectors_removed[space] = sum(item.count(space) for item in outcome.deleted)
        if any(errors.values()):
            outcome.cleanup_pending = outcome.deleted_ids
        outcome.status = OperationStatus.COMPLETED
        outcome.processing_time_ms = _elapsed_ms(started)
        _finish(db, outcome)
    _log(outcome, owner, len(media_ids), **(log_fields or {}))
    return outcome


def preview_batch(
    db: Database,
    *,
    owner: str,
    media_ids: Sequence[str],
    reason: str | None = None,
    clock: Callable[[], datetime] = utcnow,
) -> BatchOutcome:
    """A dry run: report what `delete_batch` would delete now, changing and storing nothing."""
    started = time.perf_counter()
    with db.unit_of_work() as uow:
        rows = uow.session.execute(
            select(Media.id, Media.hd_count, Media.ld_count).where(
                Media.id.in_(media_ids), Media.owner == owner, Media.state == MediaState.LIVE
            )
        )
        found = {row.id: row for row in rows}
    deleted, failed = _split(media_ids, found)
    outcome = BatchOutcome(
        f"dry_run_{uuid.uuid4().hex}",
        clock(),
        reason,
        deleted,
        failed,
        status=OperationStatus.COMPLETED,
        dry_run=True,
    )
    for space in SPACES:
        outcome.vectors_removed[space] = sum(item.count(space) for item in deleted)
    outcome.processing_time_ms = _elapsed_ms(started)
    _log(outcome, owner, len(media_ids))
    return outcome


def get_operation(
    db: Database,
    *,
    owner: str,
    operation_id: str,
    in_flight: timedelta = timedelta(seconds=60),
    clock: Callable[[], datetime] = utcnow,
) -> BatchOutcome:
    """Return the answer of one of `owner`'s past batches; another owner's is not found."""
    with db.unit_of_work() as uow:
        operation = uow.session.get(Operation, operation_id)
        if operation is None or operation.owner != owner:
            raise OperationNotFound(operation_id)
        return _outcome_of(uow.session, operation, clock(), in_flight)


def _log(outcome: BatchOutcome, owner: str, requested: int, **fields: Any) -> None:
    event = "job.chunk" if "job_id" in fields else "media.batch_delete"
    if outcome.dry_run:
        event = "media.batch_dry_run"
    elif outcome.replayed:
        event = "media.batch_replay"
    log.info(
        event,
        operation_id=outcome.operation_id,
        owner=owner,
        requested=requested,
        deleted=len(outcome.deleted),
        failed=len(outcome.failed),
        hd_vectors=outcome.vectors_removed["hd"],
        ld_vectors=outcome.vectors_removed["ld"],
        cleanup_pending=len(outcome.cleanup_pending),
        reason=outcome.reason,
        processing_time_ms=outcome.processing_time_ms,
        **fields,
    )
