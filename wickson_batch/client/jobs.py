"""Deletion jobs as the client sees them: the job and its progress, its items, a dry run.

The parsers take the `data` of an answer and raise TypeError, KeyError or ValueError on
anything that is not the documented shape; the client turns those into ProtocolError.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from ..protocol import FINISHED_JOB_STATUSES

# A selection as DESIGN.md section 9 has it: media ids and objects with `exclude`.
Selection = Sequence[str | Mapping[str, Any]]


@dataclass(frozen=True)
class JobProgress:
    """A job's counts; `total` and `remaining` are None until its selection is resolved."""

    total: int | None
    remaining: int | None
    deleted: int
    failed: int
    hd_vectors: int
    ld_vectors: int

    @property
    def done(self) -> int:
        """Manifest ids reported so far, deleted or failed."""
        return self.deleted + self.failed


@dataclass(frozen=True)
class JobError:
    """Why a job was rejected."""

    code: str
    message: str


@dataclass(frozen=True)
class DeletionJob:
    """A deletion job as the server last reported it."""

    job_id: str
    status: str
    reason: str | None
    cascade: bool
    created_at: datetime
    updated_at: datetime
    finished_at: datetime | None
    progress: JobProgress
    error: JobError | None = None
    replayed: bool = False  # the answer to a start replayed an earlier one with the same key

    @property
    def finished(self) -> bool:
        """True once the job is done, cancelled or rejected: it will not change again."""
        return self.status in FINISHED_JOB_STATUSES


@dataclass(frozen=True)
class JobItem:
    """One manifest id's outcome in a job."""

    media_id: str
    status: str  # ItemStatus.DELETED or ItemStatus.FAILED
    reason: str | None  # why it failed, e.g. NOT_FOUND
    operation_id: str | None  # the chunk's operation


@dataclass(frozen=True)
class JobPreview:
    """What a job would delete (a dry run): nothing was stored or deleted."""

    total: int
    hd_vectors: int
    ld_vectors: int
    sample: tuple[str, ...]  # the first ids, at most 20


def parse_job(data: Any, *, replayed: bool = False) -> DeletionJob:
    """Return the job in an answer's `data`."""
    progress = data["progress"]
    error = data.get("error")
    return DeletionJob(
        job_id=_str(data["job_id"]),
        status=_str(data["status"]),
        reason=_optional_str(data.get("reason")),
        cascade=_bool(data.get("cascade", False)),
        created_at=_time(data["created_at"]),
        updated_at=_time(data["updated_at"]),
        finished_at=None if data.get("finished_at") is None else _time(data["finished_at"]),
        progress=JobProgress(
            total=_optional_int(progress["total"]),
            remaining=_optional_int(progress["remaining"]),
            deleted=_int(progress["deleted"]),
            failed=_int(progress["failed"]),
            hd_vectors=_int(progress["hd_vectors"]),
            ld_vectors=_int(progress["ld_vectors"]),
        ),
        error=None if error is None else JobError(_str(error["code"]), str(error["message"])),
        replayed=replayed,
    )


def parse_item(data: Any) -> JobItem:
    """Return one entry of a job's items."""
    return JobItem(
        media_id=_str(data["media_id"]),
        status=_str(data["status"]),
        reason=_optional_str(data.get("reason")),
        operation_id=_optional_str(data.get("operation_id")),
    )


def parse_preview(data: Any) -> JobPreview:
    """Return a dry run's answer."""
    return JobPreview(
        total=_int(data["total"]),
        hd_vectors=_int(data["hd_vectors"]),
        ld_vectors=_int(data["ld_vectors"]),
        sample=tuple(_str(media_id) for media_id in data["sample"]),
    )


def _str(value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError(f"expected a string, got {value!r}")
    return value


def _optional_str(value: Any) -> str | None:
    return None if value is None else _str(value)


def _int(value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"expected an integer, got {value!r}")
    return value


def _optional_int(value: Any) -> int | None:
    return None if value is None else _int(value)


def _bool(value: Any) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"expected a boolean, got {value!r}")
    return value


def _time(value: Any) -> datetime:
    return datetime.fromisoformat(_str(value))
