"""The reconciler: drains vector-cleanup tasks, removes stale pending media and orphans."""

from __future__ import annotations

import threading
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import structlog
from sqlalchemy import delete, func, select, text, update

from ..db import Database
from ..models import PENDING_ONLY, CleanupTask, IdempotencyKey, Media, MediaState, utcnow
from ..vectors.base import SPACES, Space, VectorIndex
from .deletion import IDEMPOTENCY_WINDOW
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


@dataclass(slots=True)
class ConsistencyReport:
    """How the SQL truth and the vector store compare."""

    live_media: int = 0
    pending_media: int = 0
    pending_cleanup: int = 0
    points: dict[str, int] = field(default_factory=dict)
    media_missing_points: list[str] = field(default_factory=list)
    orphan_points: dict[str, int] = field(default_factory=dict)

    @property
    def consistent(self) -> bool:
        """True when every live media has all its points and no point lacks its media."""
        return not self.media_missing_points and not any(self.orphan_points.values())


def check_consistency(db: Database, vectors: VectorIndex, sample: int = 20) -> ConsistencyReport:
    """Compare every media row with the points the store holds."""
    report = ConsistencyReport(pending_cleanup=pending_cleanup_count(db))
    with db.unit_of_work() as uow:
        media = {
            row.id: row
            for row in uow.session.execute(
                select(Media.id, Media.state, Media.hd_count, Media.ld_count)
            )
        }
    report.live_media = sum(1 for row in media.values() if row.state == MediaState.LIVE)
    report.pending_media = len(media) - report.live_media
    for space in SPACES:
        per_media: Counter[str] = Counter()
        for page in vectors.scan(space):
            per_media.update(point.media_id for point in page)
        report.points[space] = sum(per_media.values())
        report.orphan_points[space] = sum(n for m, n in per_media.items() if m not in media)
        for media_id, row in media.items():
            expected = row.hd_count if space == "hd" else row.ld_count
            if row.state == MediaState.LIVE and per_media.get(media_id, 0) != expected:
                if media_id not in report.media_missing_points:
                    report.media_missing_points.append(media_id)
    del report.media_missing_points[sample:]
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
            except Exception:  # keep the thread alive; the next round retries
                log.exception("reconcile.failed")
            self._stop.wait(self.interval)
