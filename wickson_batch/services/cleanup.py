"""The reconciler: drains vector-cleanup tasks, removes stale pending media and orphans."""

from __future__ import annotations

import threading
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import structlog
from sqlalchemy import delete, func, select, text, update

from ..db import Database
from ..models import PENDING_ONLY, CleanupTask, IdempotencyKey, Media, MediaState, utcnow
from ..vectors.base import SPACES, Space, VectorIndex
from .deletion import IDEMPOTENCY_WINDOW, delete_batch
from .errors import STORE_ERRORS
from .points import MediaPoints, queue_cleanup, remove_points

log = structlog.get_logger("wickson_batch")

MAX_BACKOFF_SECONDS = 300
DRAIN_BATCH = 500


def backoff(attempts: int) -> timedelta:
    """Return how long to wait before attempt number `attempts + 1`."""
    return timedelta(seconds=min(MAX_BACKOFF_SECONDS, 2 ** min(attempts, 16)))


@dataclass(slots=True)
class DrainReport:
    """What one drain did."""

    tasks_done: int = 0
    tasks_failed: int = 0
    pending_removed: int = 0
    keys_expired: int = 0


def expire_idempotency_keys(db: Database, *, now: datetime | None = None) -> int:
    """Forget Idempotency-Keys older than their replay window; return how many."""
    cutoff = (now or utcnow()) - IDEMPOTENCY_WINDOW
    with db.unit_of_work() as uow:
        result = uow.session.execute(
            delete(IdempotencyKey).where(IdempotencyKey.created_at <= cutoff)
        )
        uow.commit()
    return int(getattr(result, "rowcount", 0) or 0)


def drain_cleanup(
    db: Database,
    vectors: VectorIndex,
    *,
    grace: timedelta,
    now: datetime | None = None,
    postponed_too: bool = False,
) -> DrainReport:
    """Remove the points of every due cleanup task older than `grace`.

    A task that failed waits out its backoff; with `postponed_too` (an operator asking for
    it now) it is tried at once all the same.
    """
    now = now or utcnow()
    report = DrainReport()
    selected = CleanupTask.created_at <= now - grace
    if not postponed_too:
        selected &= CleanupTask.next_attempt_at <= now
    while True:
        with db.unit_of_work() as uow:
            tasks = list(
                uow.session.scalars(
                    select(CleanupTask).where(selected).order_by(CleanupTask.id).limit(DRAIN_BATCH)
                )
            )
        if not tasks:
            return report
        items = [MediaPoints(t.media_id, t.hd_count, t.ld_count) for t in tasks]
        task_ids = [t.id for t in tasks]
        failure = "; ".join(error for error in remove_points(vectors, items).values() if error)
        if failure:
            _postpone(db, tasks, now, failure)
            report.tasks_failed += len(tasks)
            log.warning("cleanup.retry_later", tasks=len(tasks), error=failure)
            return report
        with db.unit_of_work() as uow:
            uow.session.execute(delete(CleanupTask).where(CleanupTask.id.in_(task_ids)))
            uow.commit()
        report.tasks_done += len(tasks)


def _postpone(db: Database, tasks: list[CleanupTask], now: datetime, error: str) -> None:
    with db.unit_of_work() as uow:
        for task in tasks:
            uow.session.execute(
                update(CleanupTask)
                .where(CleanupTask.id == task.id)
                .values(
                    attempts=task.attempts + 1,
                    next_attempt_at=now + backoff(task.attempts + 1),
                    last_error=error[:1000],
                )
            )
        uow.commit()


def remove_stale_pending(db: Database, *, grace: timedelta, now: datetime | None = None) -> int:
    """Claim media left `pending` past `grace` (a crashed creation) and queue their points.

    The rows go first, in the same transaction that queues their cleanup: a creation still
    running then fails to mark its row live and removes its own points, so a slow creation
    can never end up live without them. The next drain removes the queued points.
    """
    now = now or utcnow()
    with db.unit_of_work() as uow:
        claimed = list(
            uow.session.execute(
                delete(Media)
                .where(text(PENDING_ONLY), Media.created_at <= now - grace)
                .returning(Media.id, Media.hd_count, Media.ld_count)
                .execution_options(synchronize_session=False)
            )
        )
        if claimed:
            items = [MediaPoints(row.id, row.hd_count, row.ld_count) for row in claimed]
            # Due at once: these rows are already older than the grace period.
            queue_cleanup(
                uow.session, items, f"reconcile_{uuid.uuid4().hex}", now, created_at=now - grace
            )
        uow.commit()
    return len(claimed)


def _existing_media(db: Database, media_ids: set[str]) -> set[str]:
    with db.unit_of_work() as uow:
        rows = uow.session.execute(select(Media.id).where(Media.id.in_(media_ids)))
        return {row[0] for row in rows}


def remove_orphans(
    db: Database, vectors: VectorIndex, should_stop: Callable[[], bool] = lambda: False
) -> dict[Space, int]:
    """Scan both collections and delete points whose media row does not exist."""
    removed: dict[Space, int] = {}
    for space in SPACES:
        orphans: list[uuid.UUID] = []
        for page in vectors.scan(space):
            if should_stop():
                return removed
            existing = _existing_media(db, {point.media_id for point in page})
            orphans.extend(point.id for point in page if point.media_id not in existing)
        vectors.delete(space, orphans)
        removed[space] = len(orphans)
    return removed


def pending_cleanup_count(db: Database) -> int:
    """Return how many cleanup tasks are waiting."""
    with db.unit_of_work() as uow:
        return int(uow.session.scalar(select(func.count()).select_from(CleanupTask)) or 0)


@dataclass(frozen=True, slots=True)
class MissingPoints:
    """A live media whose store holds fewer (or other) points than its row counts."""

    media_id: str
    owner: str
    expected: dict[Space, int]
    found: dict[Space, int]

    def describe(self) -> str:
        """Return e.g. `vec-… hd 0/2 ld 1/1`: points found / expected, per space."""
        spaces = " ".join(f"{s} {self.found[s]}/{self.expected[s]}" for s in SPACES)
        return f"{self.media_id} {spaces}"

    @property
    def short(self) -> bool:
        """True when some space holds fewer points than the row counts."""
        return any(self.found[s] < self.expected[s] for s in SPACES)


@dataclass(slots=True)
class ConsistencyReport:
    """How the SQL truth and the vector store compare."""

    live_media: int = 0
    pending_media: int = 0
    pending_cleanup: int = 0
    points: dict[str, int] = field(default_factory=dict)
    missing_points_count: int = 0
    media_missing_points: list[MissingPoints] = field(default_factory=list)
    orphan_points: dict[str, int] = field(default_factory=dict)

    @property
    def consistent(self) -> bool:
        """True when every live media has all its points and no point lacks its media."""
        return not self.missing_points_count and not any(self.orphan_points.values())


def _points_per_media(vectors: VectorIndex) -> dict[Space, Counter[str]]:
    per_space: dict[Space, Counter[str]] = {}
    for space in SPACES:
        per_media: Counter[str] = Counter()
        for page in vectors.scan(space):
            per_media.update(point.media_id for point in page)
        per_space[space] = per_media
    return per_space


def _mismatch(row: Any, found: dict[Space, int]) -> MissingPoints | None:
    expected: dict[Space, int] = {"hd": row.hd_count, "ld": row.ld_count}
    if found == expected:
        return None
    return MissingPoints(row.id, row.owner, expected, found)


def check_consistency(db: Database, vectors: VectorIndex, sample: int = 20) -> ConsistencyReport:
    """Compare every media row with the points the store holds.

    `media_missing_points` lists the first `sample` live media (by id) whose points do not match
    their row; `missing_points_count` counts them all.
    """
    report = ConsistencyReport(pending_cleanup=pending_cleanup_count(db))
    with db.unit_of_work() as uow:
        media = {
            row.id: row
            for row in uow.session.execute(
                select(Media.id, Media.owner, Media.state, Media.hd_count, Media.ld_count).order_by(
                    Media.id
                )
            )
        }
    report.live_media = sum(1 for row in media.values() if row.state == MediaState.LIVE)
    report.pending_media = len(media) - report.live_media
    per_space = _points_per_media(vectors)
    for space in SPACES:
        per_media = per_space[space]
        report.points[space] = sum(per_media.values())
        report.orphan_points[space] = sum(n for m, n in per_media.items() if m not in media)
    for media_id, row in media.items():
        if row.state != MediaState.LIVE:
            continue
        found: dict[Space, int] = {s: per_space[s].get(media_id, 0) for s in SPACES}
        mismatch = _mismatch(row, found)
        if mismatch is not None:
            report.missing_points_count += 1
            if len(report.media_missing_points) < sample:
                report.media_missing_points.append(mismatch)
    return report


REPAIR_REASON = "repair:missing_points"


@dataclass(slots=True)
class RepairReport:
    """What a search for (or a repair of) live media missing points found and did."""

    found: list[MissingPoints] = field(default_factory=list)
    too_young: int = 0
    recovered: int = 0
    repaired: int = 0
    operation_ids: list[str] = field(default_factory=list)


def find_missing_points(
    db: Database, vectors: VectorIndex, *, grace: timedelta, now: datetime | None = None
) -> RepairReport:
    """Find the live media older than `grace` with fewer points than their row counts.

    Younger ones are only counted (`too_young`): their creation may still be under way.
    The store is scanned before the rows are read, so a media created meanwhile shows up
    as short; `repair_missing_points` re-counts every candidate before removing it.
    """
    now = now or utcnow()
    report = RepairReport()
    per_space = _points_per_media(vectors)
    with db.unit_of_work() as uow:
        rows = list(
            uow.session.execute(
                select(Media.id, Media.owner, Media.hd_count, Media.ld_count, Media.created_at)
                .where(Media.state == MediaState.LIVE)
                .order_by(Media.id)
            )
        )
    for row in rows:
        found: dict[Space, int] = {s: per_space[s].get(row.id, 0) for s in SPACES}
        mismatch = _mismatch(row, found)
        if mismatch is None or not mismatch.short:
            continue
        if row.created_at > now - grace:
            report.too_young += 1
        else:
            report.found.append(mismatch)
    return report


def repair_missing_points(
    db: Database,
    vectors: VectorIndex,
    *,
    grace: timedelta,
    max_batch: int,
    now: datetime | None = None,
) -> RepairReport:
    """Remove the live media older than `grace` whose points are gone, as operations.

    Each candidate's points are counted again by id just before: one whose points are all
    there now is left alone (`recovered`). The rest are deleted through `delete_batch`, one
    operation per owner and per `max_batch` ids, with reason `repair:missing_points` and no
    API key, so they are stored and looked up like any batch of their owner.
    """
    report = find_missing_points(db, vectors, grace=grace, now=now)
    by_owner: dict[str, list[str]] = {}
    for candidate in report.found:
        recounted: dict[Space, int] = {s: vectors.count(s, candidate.media_id) for s in SPACES}
        if all(recounted[s] >= candidate.expected[s] for s in SPACES):
            report.recovered += 1
            continue
        by_owner.setdefault(candidate.owner, []).append(candidate.media_id)
    for owner, media_ids in sorted(by_owner.items()):
        for start in range(0, len(media_ids), max_batch):
            outcome = delete_batch(
                db,
                vectors,
                owner=owner,
                media_ids=media_ids[start : start + max_batch],
                reason=REPAIR_REASON,
                api_key_id=None,
            )
            report.operation_ids.append(outcome.operation_id)
            report.repaired += len(outcome.deleted)
    if report.operation_ids:
        log.warning(
            "reconcile.repaired",
            operation_ids=report.operation_ids,
            repaired=report.repaired,
            recovered=report.recovered,
            too_young=report.too_young,
        )
    return report


class Reconciler:
    """A background thread that drains cleanup on start and then on a timer."""

    def __init__(
        self,
        db: Database,
        vectors: VectorIndex,
        *,
        interval: float,
        grace: float,
        full_scan_first: bool = False,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.db = db
        self.vectors = vectors
        self.interval = interval
        self.grace = timedelta(seconds=grace)
        self.full_scan_pending = full_scan_first
        self.clock = clock
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="wickson-reconciler", daemon=True)

    def start(self) -> None:
        """Start the thread."""
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Ask the thread to stop and wait for it."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def run_once(self) -> DrainReport:
        """Do one round: orphan scan if owed, stale pending media, cleanup tasks, flush."""
        if self.full_scan_pending:
            removed = remove_orphans(self.db, self.vectors, self._stop.is_set)
            self.full_scan_pending = self._stop.is_set()  # interrupted: still owed
            log.info("reconcile.orphans_removed", **removed)
        now = self.clock()
        pending_removed = remove_stale_pending(self.db, grace=self.grace, now=now)
        report = drain_cleanup(self.db, self.vectors, grace=self.grace, now=now)
        report.pending_removed = pending_removed
        report.keys_expired = expire_idempotency_keys(self.db, now=now)
        self.vectors.flush()
        if report.tasks_done or report.tasks_failed or report.pending_removed:
            log.info(
                "reconcile.round",
                tasks_done=report.tasks_done,
                tasks_failed=report.tasks_failed,
                pending_removed=report.pending_removed,
                keys_expired=report.keys_expired,
            )
        return report

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.run_once()
            except STORE_ERRORS as error:  # a store down: expected, the next round retries
                log.warning("reconcile.failed", error=str(error))
            except Exception:  # keep the thread alive; the next round retries
                log.exception("reconcile.failed")
            self._stop.wait(self.interval)
