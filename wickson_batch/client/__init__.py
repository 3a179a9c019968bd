"""The client of the batch-deletion and deletion-job API, and the commands built on it.

Needs only httpx (and click, and tqdm for the jobs progress bar, for the commands) and
`wickson_batch.protocol`: neither Flask, nor marshmallow, nor any server module.
"""

from __future__ import annotations

from .client import (
    ApiError,
    Batch,
    BatchResult,
    DeleteResult,
    JobWaitTimeout,
    ProtocolError,
    RetriesExhausted,
    WicksonClient,
    WicksonError,
    parse_retry_after,
    plan_batches,
)
from .jobs import DeletionJob, JobError, JobItem, JobPreview, JobProgress, Selection

__all__ = [
    "ApiError",
    "Batch",
    "BatchResult",
    "DeleteResult",
    "DeletionJob",
    "JobError",
    "JobItem",
    "JobPreview",
    "JobProgress",
    "JobWaitTimeout",
    "ProtocolError",
    "RetriesExhausted",
    "Selection",
    "WicksonClient",
    "WicksonError",
    "parse_retry_after",
    "plan_batches",
]
