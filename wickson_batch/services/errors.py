"""Domain errors raised by the service layer, and the per-item failure reasons."""

from __future__ import annotations


class FailureReason:
    """Stable codes for `failed.reasons` in a batch response (documented in the README)."""

    # Missing, already deleted, still being created, or owned by someone else: one code,
    # so that a caller can never learn that another owner's id exists.
    NOT_FOUND = "NOT_FOUND"


class DomainError(Exception):
    """Base of every error the services raise on purpose."""


class MediaNotFound(DomainError):
    """The media does not exist for this owner."""

    def __init__(self, media_id: str) -> None:
        super().__init__(f"Media {media_id} not found")
        self.media_id = media_id


class DatabaseUnavailable(DomainError):
    """The SQL database could not be reached; nothing was changed."""


class VectorStoreError(DomainError):
    """The vector store failed an operation."""


class VectorStoreLocked(VectorStoreError):
    """The embedded vector store is open in another process."""


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
