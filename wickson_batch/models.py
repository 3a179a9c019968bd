"""SQLAlchemy 2.x typed models: the source of truth."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, Boolean, DateTime, Index, Integer, String, Text, text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator


def utcnow() -> datetime:
    """Return the current time, aware, in UTC."""
    return datetime.now(UTC)


def iso_utc(moment: datetime) -> str:
    """Format an aware time as `2026-03-09T12:34:56Z`, the one timestamp format of the API."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class UtcDateTime(TypeDecorator[datetime]):
    """A timestamp stored naive in UTC and always read back aware."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given; use an aware UTC datetime")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        return None if value is None else value.replace(tzinfo=UTC)


class Base(DeclarativeBase):
    pass


class MediaState:
    """A media row is `pending` while its points are written, then `live`."""

    PENDING = "pending"
    LIVE = "live"


# Written out, not bound, so that the planner can match it to the partial index.
PENDING_ONLY = f"state = '{MediaState.PENDING}'"


class ApiKey(Base):
    __tablename__ = "api_keys"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    owner: Mapped[str] = mapped_column(String(128), index=True)
    name: Mapped[str | None] = mapped_column(String(200))
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    scopes: Mapped[str] = mapped_column(String(200))  # space-separated
    rate_limit: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(UtcDateTime())


class Media(Base):
    __tablename__ = "media"

    id: Mapped[str] = mapped_column(String(128), primary_key=True)
    owner: Mapped[str] = mapped_column(String(128))
    state: Mapped[str] = mapped_column(String(16), default=MediaState.PENDING)
    title: Mapped[str | None] = mapped_column(String(500))
    metadata_: Mapped[dict[str, Any] | None] = mapped_column("metadata", JSON)
    hd_count: Mapped[int] = mapped_column(Integer)
    ld_count: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utcnow)
    # The media this one is derived from (section 10); its children are found by this index.
    parent_id: Mapped[str | None] = mapped_column(String(128), index=True)

    # The listing's order per owner, (created_at, id), read in index order page by page.
    # Only pending rows are indexed by age, for the reconciler. An index that led with
    # `state` tempted SQLite to walk every live row for a batch (it cannot tell a bound
    # `state = ?` is selective) instead of looking each id up by primary key.
    __table_args__ = (
        Index(
            "ix_media_pending_created",
            "created_at",
            sqlite_where=text(PENDING_ONLY),
            postgresql_where=text(PENDING_ONLY),
        ),
        Index("ix_media_owner_created", "owner", "created_at", "id"),
    )


class CleanupTask(Base):
    """Points of a deleted media still to be removed from the vector store."""

    __tablename__ = "cleanup_tasks"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    media_id: Mapped[str] = mapped_column(String(128))
    operation_id: Mapped[str] = mapped_column(String(64))
    hd_count: Mapped[int] = mapped_column(Integer)
    ld_count: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utcnow)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utcnow)
    last_error: Mapped[str | None] = mapped_column(Text)

    __table_args__ = (
        Index("ix_cleanup_tasks_operation", "operation_id"),
        Index("ix_cleanup_tasks_due", "next_attempt_at"),
    )


class Operation(Base):
    """The stored outcome of one batch deletion."""

    __tablename__ = "operations"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    owner: Mapped[str] = mapped_column(String(128), index=True)
    api_key_id: Mapped[int | None] = mapped_column(Integer)
    reason: Mapped[str | None] = mapped_column(String(500))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utcnow)
    requested: Mapped[int] = mapped_column(Integer)
    deleted: Mapped[int] = mapped_column(Integer)
    failed: Mapped[int] = mapped_column(Integer)
    result: Mapped[dict[str, Any]] = mapped_column(JSON)


class IdempotencyKey(Base):
    """A client's Idempotency-Key, claimed in the transaction that decides its batch.

    Scoped per API key; it points at the operation whose response a retry replays.
    """

    __tablename__ = "idempotency_keys"

    api_key_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    request_hash: Mapped[str] = mapped_column(String(64))
    operation_id: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utcnow)

    __table_args__ = (Index("ix_idempotency_keys_created", "created_at"),)


class DeletionJob(Base):
    """A background deletion of a selection, chunk by chunk (DESIGN section 9).

    The runner that holds the lease (`lease_holder` until `lease_expires_at`) is the only
    one that may change it; a lease not renewed in time is taken over by another runner.
    """

    __tablename__ = "deletion_jobs"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    owner: Mapped[str] = mapped_column(String(128))
    api_key_id: Mapped[int | None] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16))
    selection: Mapped[list[Any]] = mapped_column(JSON)
    reason: Mapped[str | None] = mapped_column(String(500))
    cascade: Mapped[bool] = mapped_column(Boolean, default=False)
    # Null until the manifest is resolved; fixed from then on.
    total: Mapped[int | None] = mapped_column(Integer)
    deleted: Mapped[int] = mapped_column(Integer, default=0)
    failed: Mapped[int] = mapped_column(Integer, default=0)
    hd_vectors: Mapped[int] = mapped_column(Integer, default=0)
    ld_vectors: Mapped[int] = mapped_column(Integer, default=0)
    error_code: Mapped[str | None] = mapped_column(String(64))
    error_message: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    lease_holder: Mapped[str | None] = mapped_column(String(128))
    lease_expires_at: Mapped[datetime | None] = mapped_column(UtcDateTime())

    __table_args__ = (
        # The owner's jobs, newest first (the listing's keyset).
        Index("ix_deletion_jobs_owner_created", "owner", "created_at", "id"),
        # The runnable ones, oldest first (the runner's claim).
        Index("ix_deletion_jobs_status_created", "status", "created_at"),
    )


class DeletionJobItem(Base):
    """One id of a job's manifest, in the order it was resolved, and its outcome."""

    __tablename__ = "deletion_job_items"

    job_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    position: Mapped[int] = mapped_column(Integer, primary_key=True)
    media_id: Mapped[str] = mapped_column(String(128))
    status: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str | None] = mapped_column(String(64))
    operation_id: Mapped[str | None] = mapped_column(String(64))

    # The next chunk (pending, by position) and a page of outcomes (by status, by position).
    __table_args__ = (Index("ix_deletion_job_items_status", "job_id", "status", "position"),)
