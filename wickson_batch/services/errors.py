"""Domain errors raised by the service layer on purpose.

The stores' own errors live beside them: `DatabaseUnavailable` in `db.py`, `VectorStoreError`
beside the `VectorIndex` port. `STORE_ERRORS` names both, for code that answers either alike.
"""

from __future__ import annotations

from ..db import DatabaseUnavailable
from ..vectors.base import VectorStoreError

# A store failed: nothing the caller sent was wrong, and a retry later may succeed.
STORE_ERRORS: tuple[type[Exception], ...] = (DatabaseUnavailable, VectorStoreError)


class DomainError(Exception):
    """Base of every error the services raise on purpose."""


class MediaNotFound(DomainError):
    """The media does not exist for this owner."""

    def __init__(self, media_id: str) -> None:
        super().__init__(f"Media {media_id} not found")
        self.media_id = media_id


class InvalidVectors(DomainError):
    """Vectors do not fit the configured spaces; `field` names the request field."""

    def __init__(self, message: str, field: str) -> None:
        super().__init__(message)
        self.field = field


class IdempotencyKeyReused(DomainError):
    """An Idempotency-Key came back with a different request body."""


class IdempotencyKeyInUse(DomainError):
    """The first request with this Idempotency-Key is still being processed."""


class OperationNotFound(DomainError):
    """No operation with this id belongs to the caller's owner."""

    def __init__(self, operation_id: str) -> None:
        super().__init__(f"Operation {operation_id} not found")
        self.operation_id = operation_id


class InvalidFilter(DomainError):
    """A filter (section 9) is malformed; `field` names where, e.g. `filter.created_before`."""

    def __init__(self, message: str, field: str) -> None:
        super().__init__(message)
        self.field = field


class InvalidSelection(DomainError):
    """A selection (section 9) is malformed; `field` names where, e.g. `selection[3].exclude[0]`."""

    def __init__(self, message: str, field: str) -> None:
        super().__init__(message)
        self.field = field


class InvalidCursor(DomainError):
    """A paging cursor is malformed, edited, or belongs to another listing."""

    def __init__(self, message: str, field: str) -> None:
        super().__init__(message)
        self.field = field


class DecisionUnknown(DatabaseUnavailable):
    """The connection was lost at the deciding commit and the database cannot say yet."""

    def __init__(self, operation_id: str) -> None:
        super().__init__(f"the outcome of operation {operation_id} is unknown")
        self.operation_id = operation_id


class JobNotFound(DomainError):
    """No deletion job with this id belongs to the caller's owner."""

    def __init__(self, job_id: str) -> None:
        super().__init__(f"Deletion job {job_id} not found")
        self.job_id = job_id


class JobFinished(DomainError):
    """The deletion job has ended (done, cancelled or rejected): it cannot be cancelled."""

    def __init__(self, job_id: str, status: str) -> None:
        super().__init__(f"Deletion job {job_id} is already {status}")
        self.job_id = job_id
        self.status = status
