"""The ApiError hierarchy, the one envelope renderer, and the one table from domain errors."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import structlog
from flask import Flask, Response, jsonify, request
from werkzeug.exceptions import HTTPException, MethodNotAllowed

from ..db import DatabaseUnavailable
from ..logs import current_request_id
from ..protocol import IDEMPOTENCY_KEY_HEADER, ErrorCode
from ..services.errors import (
    DecisionUnknown,
    IdempotencyKeyInUse,
    IdempotencyKeyReused,
    InvalidCursor,
    InvalidFilter,
    InvalidSelection,
    InvalidVectors,
    JobFinished,
    JobNotFound,
    MediaNotFound,
    OperationNotFound,
)
from ..vectors.base import VectorStoreError

log = structlog.get_logger("wickson_batch")

# The seconds every 503 asks the caller to wait (Retry-After): about the time a lock or a
# restart of a backing store takes to clear, and no longer than DB_LOCK_TIMEOUT_MS's default.
UNAVAILABLE_RETRY_AFTER_SECONDS = 2


class ApiError(Exception):
    """An error with an HTTP status, a stable code, a message and details."""

    status = 400
    code = ErrorCode.INVALID_REQUEST

    def __init__(
        self,
        message: str,
        details: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.details = details or {}
        self.headers = headers or {}

    def to_dict(self) -> dict[str, Any]:
        """Return the envelope for this error."""
        return envelope(self.code, self.message, self.details)


class InvalidRequest(ApiError):
    code = ErrorCode.INVALID_REQUEST


class InvalidSelectionError(ApiError):
    code = ErrorCode.INVALID_SELECTION


class MissingMediaIds(ApiError):
    code = ErrorCode.MISSING_MEDIA_IDS


class InvalidMediaIds(ApiError):
    code = ErrorCode.INVALID_MEDIA_IDS


class BatchTooLarge(ApiError):
    code = ErrorCode.BATCH_TOO_LARGE


class InvalidApiKey(ApiError):
    status = 401
    code = ErrorCode.INVALID_API_KEY


class InsufficientPermissions(ApiError):
    status = 403
    code = ErrorCode.INSUFFICIENT_PERMISSIONS


class MediaNotFoundError(ApiError):
    status = 404
    code = ErrorCode.MEDIA_NOT_FOUND


class OperationNotFoundError(ApiError):
    status = 404
    code = ErrorCode.OPERATION_NOT_FOUND


class JobNotFoundError(ApiError):
    status = 404
    code = ErrorCode.JOB_NOT_FOUND


class JobFinishedError(ApiError):
    status = 409
    code = ErrorCode.JOB_FINISHED


class IdempotencyKeyInUseError(ApiError):
    status = 409
    code = ErrorCode.IDEMPOTENCY_KEY_IN_USE


class IdempotencyKeyReusedError(ApiError):
    status = 422
    code = ErrorCode.IDEMPOTENCY_KEY_REUSED


class UnsupportedMediaType(ApiError):
    status = 415
    code = ErrorCode.UNSUPPORTED_MEDIA_TYPE


class RateLimitExceeded(ApiError):
    status = 429
    code = ErrorCode.RATE_LIMIT_EXCEEDED


class ServiceUnavailable(ApiError):
    status = 503
    code = ErrorCode.SERVICE_UNAVAILABLE


class ProcessingError(ApiError):
    status = 500
    code = ErrorCode.PROCESSING_ERROR


SEND_JSON = (
    "Send a JSON body with the header 'Content-Type: application/json' "
    "(with curl: -H 'Content-Type: application/json')"
)

# werkzeug's own HTTP errors, mapped onto our codes and messages.
_HTTP_CODES: dict[int, tuple[str, str]] = {
    400: (ErrorCode.INVALID_REQUEST, "The request could not be understood"),
    404: (ErrorCode.NOT_FOUND, "No such route: check the method and path"),
    405: (ErrorCode.METHOD_NOT_ALLOWED, "Method not allowed on this route"),
    413: (ErrorCode.PAYLOAD_TOO_LARGE, "Request body too large"),
    415: (ErrorCode.UNSUPPORTED_MEDIA_TYPE, SEND_JSON),
    429: (ErrorCode.RATE_LIMIT_EXCEEDED, "Rate limit exceeded"),
}


def envelope(code: str, message: str, details: dict[str, Any] | None = None) -> dict[str, Any]:
    """Render the one error envelope every error response uses."""
    return {
        "success": False,
        "message": message,
        "error": {"code": code, "details": {"request_id": current_request_id(), **(details or {})}},
    }


def _respond(status: int, body: dict[str, Any]) -> Response:
    response = jsonify(body)
    response.status_code = status
    return response


def handle_api_error(error: ApiError) -> Response:
    """Render an ApiError in the envelope."""
    response = _respond(error.status, error.to_dict())
    response.headers.update(error.headers)
    return response


def handle_http_exception(error: HTTPException) -> Response:
    """Render werkzeug's HTTP errors (404, 405, 413, 429, ...) in the envelope, headers kept."""
    status = error.code or 500
    code, message = _HTTP_CODES.get(status, (ErrorCode.INVALID_REQUEST, error.name))
    details: dict[str, Any] = {}
    if status == 413 and request and request.max_content_length:
        details["max_bytes"] = request.max_content_length
        message = f"Request body too large: at most {request.max_content_length} bytes"
    if status == 405 and isinstance(error, MethodNotAllowed) and error.valid_methods:
        allowed = sorted(error.valid_methods)
        message = f"Method {request.method[:32]} not allowed here; allowed: {', '.join(allowed)}"
        details["allowed_methods"] = allowed
    if status == 429:
        message = f"Rate limit exceeded: {error.description}"
        details["limit"] = str(error.description)
    response = _respond(status, envelope(code, message, details))
    for name, value in error.get_headers():
        if name.lower() != "content-type":
            response.headers[name] = value
    if "allowed_methods" in details:  # in one order, not a set's
        response.headers["Allow"] = ", ".join(details["allowed_methods"])
    return response


def _database_unavailable(error: Exception) -> ApiError:
    log.error("database.unavailable", error=str(error))
    return ServiceUnavailable("The database is unavailable; nothing was changed. Retry later.")


def _decision_unknown(error: DecisionUnknown) -> ApiError:
    log.error("database.decision_unknown", operation_id=error.operation_id, error=str(error))
    return ServiceUnavailable(
        "The database connection was lost while the deletion was committed; it may have been "
        "applied. Look the operation up, or retry with the same Idempotency-Key.",
        {"operation_id": error.operation_id},
    )


def _vectors_unavailable(error: Exception) -> ApiError:
    log.error("vectors.unavailable", error=str(error))
    return ServiceUnavailable("The vector store is unavailable. Retry later.")


def _media_not_found(error: MediaNotFound) -> ApiError:
    return MediaNotFoundError(f"Media {error.media_id} not found")


def _operation_not_found(error: OperationNotFound) -> ApiError:
    return OperationNotFoundError(f"Operation {error.operation_id[:128]} not found")


def _job_not_found(error: JobNotFound) -> ApiError:
    return JobNotFoundError(f"Deletion job {error.job_id[:128]} not found")


def _job_finished(error: JobFinished) -> ApiError:
    return JobFinishedError(
        f"Deletion job {error.job_id} has already ended ({error.status}): there is nothing "
        "to cancel",
        {"status": error.status},
    )


def _invalid_vectors(error: InvalidVectors) -> ApiError:
    return InvalidRequest(str(error), {"field": error.field})


def _invalid_filter(error: InvalidFilter) -> ApiError:
    return InvalidRequest(str(error), {"field": error.field})


def _invalid_cursor(error: InvalidCursor) -> ApiError:
    return InvalidRequest(str(error), {"field": error.field})


def _invalid_selection(error: InvalidSelection) -> ApiError:
    return InvalidSelectionError(str(error), {"field": error.field})


def _key_in_use(_error: IdempotencyKeyInUse) -> ApiError:
    return IdempotencyKeyInUseError(
        "A request with this Idempotency-Key is still being processed; retry in a "
        "second to get its answer",
        {"header": IDEMPOTENCY_KEY_HEADER},
    )


def _key_reused(_error: IdempotencyKeyReused) -> ApiError:
    return IdempotencyKeyReusedError(
        "This Idempotency-Key was used with a different request body; "
        "send a new key for a new request",
        {"header": IDEMPOTENCY_KEY_HEADER},
    )


# The one table from the errors the layers below raise to what the caller sees. A class
# not listed here (nor below one that is) is unexpected: a 500 without internals.
DOMAIN_ERRORS: dict[type[Exception], Callable[[Any], ApiError]] = {
    MediaNotFound: _media_not_found,
    OperationNotFound: _operation_not_found,
    JobNotFound: _job_not_found,
    JobFinished: _job_finished,
    InvalidVectors: _invalid_vectors,
    InvalidFilter: _invalid_filter,
    InvalidSelection: _invalid_selection,
    InvalidCursor: _invalid_cursor,
    IdempotencyKeyInUse: _key_in_use,
    IdempotencyKeyReused: _key_reused,
    DecisionUnknown: _decision_unknown,
    DatabaseUnavailable: _database_unavailable,
    VectorStoreError: _vectors_unavailable,
}


def handle_domain_error(error: Exception) -> Response:
    """Map an error the services raised to its HTTP form through DOMAIN_ERRORS."""
    for cls in type(error).__mro__:
        to_api = DOMAIN_ERRORS.get(cls)
        if to_api is not None:
            return handle_api_error(to_api(error))
    return handle_unexpected(error)


def handle_unexpected(error: Exception) -> Response:
    """Log an unexpected error and answer 500 without internals."""
    if isinstance(error, HTTPException):
        return handle_http_exception(error)
    log.exception("request.failed", error_type=type(error).__name__)
    return handle_api_error(
        ProcessingError(
            "The request could not be processed; quote the request_id when reporting this"
        )
    )


def register_handlers(app: Flask) -> None:
    """Route every error through the envelope; api/ratelimits.py decides Retry-After."""
    app.register_error_handler(ApiError, handle_api_error)
    app.register_error_handler(HTTPException, handle_http_exception)
    for domain_error in DOMAIN_ERRORS:
        app.register_error_handler(domain_error, handle_domain_error)
    app.register_error_handler(Exception, handle_unexpected)
