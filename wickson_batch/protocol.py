"""What the server and its clients share: paths, headers, codes, the media-id rule, statuses.

Plain constants and one pure function: no Flask, no SQLAlchemy, no marshmallow. The client
package imports this module and nothing else of the server's.
"""

from __future__ import annotations

import re

__all__ = [
    "API_KEY_HEADER",
    "BATCH_PATH",
    "DEFAULT_MAX_BATCH_SIZE",
    "DEFAULT_PAGE_SIZE",
    "ErrorCode",
    "FAILURE_REASONS",
    "FINISHED_JOB_STATUSES",
    "FailureReason",
    "IDEMPOTENCY_KEY_HEADER",
    "ITEM_STATUSES",
    "ItemStatus",
    "JOBS_PATH",
    "JOB_STATUSES",
    "JobStatus",
    "MAX_PAGE_SIZE",
    "MEDIA_ID_PATTERN",
    "MEDIA_ID_RULE",
    "OPERATION_STATUSES",
    "OperationStatus",
    "REPLAYED_HEADER",
    "REQUEST_ID_HEADER",
    "RESERVED_MEDIA_SEGMENTS",
    "RETRY_AFTER_HEADER",
    "SCOPES",
    "Scope",
    "is_media_id",
]

# --- paths and headers ------------------------------------------------------------------

BATCH_PATH = "/v1/media/batch"
JOBS_PATH = "/v1/deletion-jobs"
API_KEY_HEADER = "X-Api-Key"
IDEMPOTENCY_KEY_HEADER = "Idempotency-Key"
REPLAYED_HEADER = "Idempotent-Replayed"
REQUEST_ID_HEADER = "X-Request-ID"
RETRY_AFTER_HEADER = "Retry-After"

# The server's MAX_BATCH_SIZE unless it was configured otherwise.
DEFAULT_MAX_BATCH_SIZE = 100

# Every paged list (`GET /v1/media`, ...): `limit` is 1..MAX_PAGE_SIZE, DEFAULT_PAGE_SIZE if absent.
DEFAULT_PAGE_SIZE = 20
MAX_PAGE_SIZE = 100


# --- media ids --------------------------------------------------------------------------

MEDIA_ID_PATTERN = r"^[A-Za-z0-9_.:-]{1,128}$"
MEDIA_ID_RULE = "1 to 128 characters from A-Z a-z 0-9 _ . : -"
# fullmatch, not match: `$` would also accept a trailing newline.
_MEDIA_ID = re.compile(r"[A-Za-z0-9_.:-]{1,128}")


def is_media_id(value: str) -> bool:
    """True when `value` is a well-formed media id."""
    return _MEDIA_ID.fullmatch(value) is not None


# The fixed segments under /v1/media/ (every route's, and any later one's): never a media id
# in a path, so `GET /v1/media/batch` is a 405 naming the methods `/v1/media/batch` has,
# not a lookup. Server-made ids are `vec-<hex>`: reserving a word never hides a media.
RESERVED_MEDIA_SEGMENTS = frozenset({"batch", "search"})


# --- scopes -----------------------------------------------------------------------------


class Scope:
    """The permissions an API key can hold."""

    READ = "media:read"
    WRITE = "media:write"
    DELETE = "media:delete"


# A key's scopes when none are named, in the order they are listed.
SCOPES = (Scope.READ, Scope.WRITE, Scope.DELETE)


# --- codes ------------------------------------------------------------------------------


class ErrorCode:
    """Every `error.code` the API can return."""

    MISSING_MEDIA_IDS = "MISSING_MEDIA_IDS"
    INVALID_MEDIA_IDS = "INVALID_MEDIA_IDS"
    BATCH_TOO_LARGE = "BATCH_TOO_LARGE"
    INVALID_REQUEST = "INVALID_REQUEST"
    INVALID_SELECTION = "INVALID_SELECTION"
    INVALID_API_KEY = "INVALID_API_KEY"
    INSUFFICIENT_PERMISSIONS = "INSUFFICIENT_PERMISSIONS"
    MEDIA_NOT_FOUND = "MEDIA_NOT_FOUND"
    OPERATION_NOT_FOUND = "OPERATION_NOT_FOUND"
    IDEMPOTENCY_KEY_IN_USE = "IDEMPOTENCY_KEY_IN_USE"
    IDEMPOTENCY_KEY_REUSED = "IDEMPOTENCY_KEY_REUSED"
    JOB_NOT_FOUND = "JOB_NOT_FOUND"
    JOB_FINISHED = "JOB_FINISHED"
    # A job's `error.code` when it was rejected before deleting anything.
    JOB_TOO_LARGE = "JOB_TOO_LARGE"
    NOT_FOUND = "NOT_FOUND"
    METHOD_NOT_ALLOWED = "METHOD_NOT_ALLOWED"
    PAYLOAD_TOO_LARGE = "PAYLOAD_TOO_LARGE"
    UNSUPPORTED_MEDIA_TYPE = "UNSUPPORTED_MEDIA_TYPE"
    RATE_LIMIT_EXCEEDED = "RATE_LIMIT_EXCEEDED"
    PROCESSING_ERROR = "PROCESSING_ERROR"
    SERVICE_UNAVAILABLE = "SERVICE_UNAVAILABLE"


class FailureReason:
    """Stable codes for `failed.reasons` in a batch response (docs/api.md lists them)."""

    # Missing, already deleted, still being created, or owned by someone else: one code,
    # so that a caller can never learn that another owner's id exists.
    NOT_FOUND = "NOT_FOUND"


FAILURE_REASONS = (FailureReason.NOT_FOUND,)


class OperationStatus:
    """Where a batch operation stands, as `GET /v1/operations/<id>` reports it."""

    COMPLETED = "completed"  # the batch answered, and this is its answer
    IN_PROGRESS = "in_progress"  # its request is still at work
    INTERRUPTED = "interrupted"  # its process stopped before answering; the deletions stand


OPERATION_STATUSES = (
    OperationStatus.COMPLETED,
    OperationStatus.IN_PROGRESS,
    OperationStatus.INTERRUPTED,
)


class JobStatus:
    """Where a deletion job stands (`GET /v1/deletion-jobs/<id>`)."""

    QUEUED = "queued"  # accepted; its selection is not resolved yet
    PROCESSING = "processing"  # its manifest is fixed; chunks are being deleted
    DONE = "done"  # every manifest id was deleted or failed
    CANCELLED = "cancelled"  # stopped on request between chunks; the deletions stand
    REJECTED = "rejected"  # ended before deleting anything; `error` says why


JOB_STATUSES = (
    JobStatus.QUEUED,
    JobStatus.PROCESSING,
    JobStatus.DONE,
    JobStatus.CANCELLED,
    JobStatus.REJECTED,
)
# The statuses a job never leaves.
FINISHED_JOB_STATUSES = frozenset({JobStatus.DONE, JobStatus.CANCELLED, JobStatus.REJECTED})


class ItemStatus:
    """The outcome of one manifest id of a job (`GET /v1/deletion-jobs/<id>/items`)."""

    PENDING = "pending"  # not reached yet (never listed as an outcome)
    DELETED = "deleted"
    FAILED = "failed"  # with a FailureReason


# The statuses `?status=` of the items route accepts: the outcomes.
ITEM_STATUSES = (ItemStatus.DELETED, ItemStatus.FAILED)
