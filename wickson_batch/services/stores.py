"""The stores one process holds: the database, the vector index, the reconciler."""

from __future__ import annotations

import fcntl
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import structlog

from ..config import Settings
from ..db import Database
from ..vectors import build_vector_index
from ..vectors.base import VectorIndex, VectorStoreLocked
from .cleanup import Reconciler
from .job_runner import ChunkObserver, JobRunner, RunnerSettings
from .vacuum import Vacuum, VacuumPolicy, VacuumStep

# One file per serving process, `DATA_DIR/run/<pid>.running`, locked while the process
# lives and removed at a clean stop. One that can be locked by someone else was left by a
# process that is gone (the kernel drops the lock with the process): an unclean stop.
RUN_DIR = "run"
LOCK_POLL_SECONDS = 0.25

log = structlog.get_logger("wickson_batch")


def _lock(path: str) -> int | None:
    """Return an fd holding an exclusive lock on `path`, or None if another process holds it."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def claim_run_marker(data_dir: str) -> tuple[str, int, bool]:
    """Lock this process's marker; return it, its fd, and whether a dead process left one."""
    run_dir = os.path.join(data_dir, RUN_DIR)
    os.makedirs(run_dir, exist_ok=True)
    unclean = False
    for name in os.listdir(run_dir):
        path = os.path.join(run_dir, name)
        if not name.endswith(".running"):
            continue
        fd = _lock(path)
        if fd is not None:  # nobody holds it: its process is gone
            unclean = True
            os.remove(path)
            os.close(fd)
    marker = os.path.join(run_dir, f"{os.getpid()}.running")
    fd = _lock(marker)
    assert fd is not None, "this process's own marker is locked by another"
    return marker, fd, unclean


def database_for(settings: Settings) -> Database:
    """Return the database of `settings`, with its lock and statement timeouts."""
    return Database(
        settings.database_url,
        lock_timeout_ms=settings.db_lock_timeout_ms,
        statement_timeout_ms=settings.db_statement_timeout_ms,
    )


@dataclass
class Stores:
    """The database and vector index of this process."""

    db: Database
    vectors: VectorIndex
    reconciler: Reconciler | None = None
    vacuum: Vacuum | None = None
    # Told of every vacuum step the background vacuum makes (the metrics count them).
    vacuum_observers: list[Callable[[VacuumStep], None]] = field(default_factory=list)
    marker: str | None = None
    marker_fd: int | None = None
    job_runner: JobRunner | None = None
    # Told of every chunk the job runner finishes (the app's metrics register here).
    chunk_observers: list[ChunkObserver] = field(default_factory=list)

    @classmethod
    def open(cls, settings: Settings) -> Stores:
        """Connect both stores: migrate the schema to head, create the missing collections."""
        db = database_for(settings)
        db.upgrade_schema()
        db.warn_if_unsafe()
        vectors = build_vector_index(settings)
        try:
            _ensure(vectors, settings.store_lock_wait_seconds)
        except Exception:
            db.dispose()
            raise
        return cls(db, vectors)

    def start_reconciler(self, settings: Settings) -> None:
        """Run the reconciler and the vacuum in this process.

        After an unclean stop the reconciler scans for orphans first.
        """
        self.marker, self.marker_fd, unclean = claim_run_marker(settings.data_dir)
        self.reconciler = Reconciler(
            self.db,
            self.vectors,
            interval=settings.reconcile_interval_seconds,
            grace=settings.reconcile_grace_seconds,
            full_scan_first=unclean,
        )
        self.reconciler.start()
        self.vacuum = Vacuum(
            self.db,
            self.vectors,
            vacuum_policy(settings),
            interval=settings.vacuum_interval_seconds,
            observers=self.vacuum_observers,
        )
        self.vacuum.start()

    def start_job_runner(self, settings: Settings) -> None:
        """Run the deletion-job runner in this process."""
        self.job_runner = self.make_job_runner(settings)
        self.job_runner.start()

    def make_job_runner(self, settings: Settings) -> JobRunner:
        """Return a deletion-job runner over these stores, not started."""
        return JobRunner(
            self.db,
            self.vectors,
            settings=RunnerSettings(
                chunk_size=settings.job_chunk_size,
                max_media=settings.job_max_media,
                max_media_per_second=settings.job_max_media_per_second,
                lease_seconds=settings.job_lease_seconds,
                poll_interval_seconds=settings.job_poll_interval_seconds,
                points_per_call=settings.job_points_per_call,
            ),
            observers=self.chunk_observers,
        )

    def close(self) -> None:
        """Stop the background threads, flush and release both stores.

        A clean stop clears the marker.
        """
        if self.job_runner is not None:  # first: it may be deleting a chunk's points
            self.job_runner.stop()
            self.job_runner = None
        if self.vacuum is not None:
            # A step under way runs to its end (the engine cannot be interrupted): wait.
            self.vacuum.stop(timeout=120)
            self.vacuum = None
        scan_owed = False
        if self.reconciler is not None:
            self.reconciler.stop()
            scan_owed = self.reconciler.full_scan_pending
            self.reconciler = None
        try:
            self.vectors.close()
        finally:
            self.db.dispose()
        if self.marker and os.path.exists(self.marker) and not scan_owed:
            os.remove(self.marker)  # kept if the orphan scan was cut short: the next start owes it
        if self.marker_fd is not None:
            os.close(self.marker_fd)
        self.marker, self.marker_fd = None, None


def vacuum_policy(settings: Settings) -> VacuumPolicy:
    """Return the vacuum's policy of `settings`."""
    return VacuumPolicy(settings.vacuum_deleted_threshold, settings.vacuum_max_age_seconds)


def _ensure(vectors: VectorIndex, wait: float) -> None:
    """Open the vector store, waiting up to `wait` seconds for a process that holds it.

    On a reload (SIGHUP) gunicorn starts the new worker while the old one finishes its
    requests, for up to graceful_timeout, still holding the embedded store.
    """
    deadline = time.monotonic() + wait
    waiting = False
    while True:
        try:
            vectors.ensure()
            return
        except VectorStoreLocked as error:
            if time.monotonic() >= deadline:
                raise
            if not waiting:
                waiting = True
                log.info("stores.waiting_for_lock", seconds=wait, reason=str(error))
            time.sleep(LOCK_POLL_SECONDS)
