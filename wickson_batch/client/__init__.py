"""The client of the batch-deletion API, and the `delete` command built on it.

Needs only httpx (and click, for the command) and `wickson_batch.protocol`: neither Flask,
nor marshmallow, nor any server module.
"""

from __future__ import annotations

from .client import (
    ApiError,
    Batch,
    BatchResult,
    DeleteResult,
    ProtocolError,
    RetriesExhausted,
    WicksonClient,
    WicksonError,
    parse_retry_after,
    plan_batches,
)

__all__ = [
    "ApiError",
    "Batch",
    "BatchResult",
    "DeleteResult",
    "ProtocolError",
    "RetriesExhausted",
    "WicksonClient",
    "WicksonError",
    "parse_retry_after",
    "plan_batches",
]
