"""marshmallow schemas: what requests may carry and what responses hold."""

from __future__ import annotations

import json
from typing import Any

from marshmallow import RAISE, Schema, ValidationError, fields, validate, validates

from ..protocol import (
    FAILURE_REASONS,
    ITEM_STATUSES,
    JOB_STATUSES,
    MEDIA_ID_PATTERN,
    MEDIA_ID_RULE,
    OPERATION_STATUSES,
    is_media_id,
)
from .context import settings

MAX_REASON = 500
MAX_VECTORS = 256
MAX_TITLE = 500
MAX_METADATA_BYTES = 64 * 1024
MAX_DIM = 65_536  # Qdrant's own limit on a vector's size
# Cosine distance normalises each vector in 32-bit floats: its squared norm must neither
# overflow nor vanish. Within these bounds it cannot, for any size up to MAX_DIM (a value near
# the float32 maximum made the store fail: "overflow encountered in dot").
MAX_VECTOR_VALUE = 1e15
MIN_VECTOR_PEAK = 1e-15


def _check_media_id(value: str) -> None:
    if not is_media_id(value):
        raise ValidationError(f"Media ids are {MEDIA_ID_RULE}")


def _check_text(value: str) -> None:
    """Refuse text that no database column can hold as sent (on every backend alike)."""
    if "\x00" in value:
        raise ValidationError("must not contain the NUL character (\\u0000)")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValidationError(
            "must be Unicode text: it holds a lone surrogate (\\ud800-\\udfff)"
        ) from None


def text_field(max_length: int, **kwargs: Any) -> fields.String:
    """Optional free text of at most `max_length` characters, stored as sent."""
    return fields.String(
        load_default=None,
        allow_none=True,
        validate=[validate.Length(max=max_length), _check_text],
        **kwargs,
    )


def media_id_field(**kwargs: object) -> fields.String:
    """A media id: 1..128 characters from [A-Za-z0-9_.:-]."""
    return fields.String(
        validate=_check_media_id,
        metadata={"pattern": MEDIA_ID_PATTERN, "minLength": 1, "maxLength": 128},
        **kwargs,  # type: ignore[arg-type]
    )


class StrictSchema(Schema):
    class Meta:
        unknown = RAISE


# --- requests ---------------------------------------------------------------------------


class BatchDeleteRequest(StrictSchema):
    media_ids = fields.List(
        media_id_field(),
        required=True,
        validate=validate.Length(min=1, error="media_ids must not be empty"),
        metadata={"description": "Ids to delete; duplicates are removed, first kept"},
    )
    reason = text_field(
        MAX_REASON, metadata={"description": "Why; stored and logged with the operation"}
    )


class Vector(fields.List[float]):
    """One vector: JSON numbers only, each within ±MAX_VECTOR_VALUE, one at least MIN_VECTOR_PEAK.

    Checked in one pass over plain Python values, not a marshmallow field per number, and
    the size first: a wrong or huge vector costs almost nothing to refuse.
    """

    def __init__(self, space: str | None = None, **kwargs: Any) -> None:
        super().__init__(fields.Float(), **kwargs)
        self.space = space  # with a space, the size must be that space's configured size

    def _deserialize(self, value: Any, attr: Any, data: Any, **kwargs: Any) -> list[float | None]:
        if not isinstance(value, list):
            raise self.make_error("invalid")
        if self.space is not None:
            size = settings().hd_dim if self.space == "hd" else settings().ld_dim
            if len(value) != size:
                raise ValidationError(f"has {len(value)} dimensions; this service stores {size}")
        if not 1 <= len(value) <= MAX_DIM:
            raise ValidationError(f"a vector holds 1 to {MAX_DIM} numbers")
        if not all(type(v) is float or type(v) is int for v in value):
            raise ValidationError("a vector holds JSON numbers only")
        if not all(-MAX_VECTOR_VALUE <= v <= MAX_VECTOR_VALUE for v in value):
            raise ValidationError(f"a value is outside -{MAX_VECTOR_VALUE:g}..{MAX_VECTOR_VALUE:g}")
        if not any(abs(v) >= MIN_VECTOR_PEAK for v in value):
            if not any(value):
                raise ValidationError("a vector of zeros has no direction")
            raise ValidationError(
                f"a vector needs a value of magnitude {MIN_VECTOR_PEAK:g} or more "
                "(smaller ones vanish in 32-bit floats)"
            )
        vector: list[float | None] = [float(v) for v in value]
        return vector


class Vectors(fields.List[list[float | None]]):
    """The vectors of one space: at most MAX_VECTORS, counted before any is read."""

    def __init__(self, space: str, **kwargs: Any) -> None:
        super().__init__(Vector(space), load_default=list, **kwargs)

    def _deserialize(self, value: Any, attr: Any, data: Any, **kwargs: Any) -> list[Any]:
        if isinstance(value, list) and len(value) > MAX_VECTORS:
            raise ValidationError(f"at most {MAX_VECTORS} vectors per space")
        result: list[Any] = super()._deserialize(value, attr, data, **kwargs)
        return result


class CreateMediaRequest(StrictSchema):
    title = text_field(MAX_TITLE)
    metadata = fields.Dict(keys=fields.String(), load_default=None, allow_none=True)
    hd_vectors = Vectors("hd", metadata={"maxItems": MAX_VECTORS})
    ld_vectors = Vectors("ld", metadata={"maxItems": MAX_VECTORS})

    @validates("metadata")
    def _metadata_size(self, value: dict[str, Any] | None, **_: Any) -> None:
        if value is not None and len(json.dumps(value)) > MAX_METADATA_BYTES:
            raise ValidationError(f"metadata is at most {MAX_METADATA_BYTES} bytes of JSON")


class JsonInteger(fields.Integer):
    """A JSON number that is a whole number: 5 or 5.0 (JSON Schema's `integer`), not "5" or true."""

    def _validated(self, value: Any) -> int:
        if type(value) is float and value.is_integer():
            return int(value)
        if type(value) is not int:
            raise self.make_error("invalid")
        return value


class SearchRequest(StrictSchema):
    vector = Vector(required=True)
    space = fields.String(required=True, validate=validate.OneOf(["hd", "ld"]))
    limit = JsonInteger(load_default=10, validate=validate.Range(min=1, max=100))


class StrictBoolean(fields.Boolean):
    """A JSON boolean, and nothing marshmallow would take for one ("yes", 1)."""

    def _deserialize(self, value: Any, attr: Any, data: Any, **kwargs: Any) -> bool:
        if type(value) is not bool:
            raise self.make_error("invalid")
        return value


class CreateJobRequest(StrictSchema):
    selection = fields.Raw(
        required=True,
        metadata={
            "type": "array",
            "description": (
                "What to delete: an array whose items are media ids or selection objects "
                "(DESIGN section 9; docs/api.md, Deletion jobs)"
            ),
        },
    )
    reason = text_field(
        MAX_REASON, metadata={"description": "Why; stored with the job and each chunk's operation"}
    )
    cascade = StrictBoolean(
        load_default=False,
        metadata={"description": "Must be false for now: cascading deletes are not offered yet"},
    )


# --- responses --------------------------------------------------------------------------


class DeletedSchema(Schema):
    count = fields.Integer(required=True)
    media_ids = fields.List(fields.String(), required=True)
    hd_vectors = fields.Integer(required=True)
    ld_vectors = fields.Integer(required=True)
    cleanup_pending = fields.List(
        fields.String(),
        metadata={"description": "Deleted, but vectors still queued for the reconciler"},
    )


class FailedSchema(Schema):
    count = fields.Integer(required=True)
    media_ids = fields.List(fields.String(), required=True)
    reasons = fields.Dict(
        keys=fields.String(),
        values=fields.String(metadata={"enum": list(FAILURE_REASONS)}),
        required=True,
    )


class BatchDataSchema(Schema):
    deleted = fields.Nested(DeletedSchema, required=True)
    failed = fields.Nested(FailedSchema, required=True)


class BatchMetadataSchema(Schema):
    operation_id = fields.String(required=True)
    timestamp = fields.String(required=True, metadata={"format": "date-time"})
    processing_time_ms = fields.Integer(required=True)
    reason = fields.String(allow_none=True, required=True)
    dry_run = fields.Boolean(
        metadata={"description": "Present, and true, on a dry run: nothing was changed"}
    )


class BatchDeleteResponse(Schema):
    success = fields.Boolean(required=True)
    message = fields.String(required=True)
    data = fields.Nested(BatchDataSchema, required=True)
    metadata = fields.Nested(BatchMetadataSchema, required=True)


class OperationMetadataSchema(BatchMetadataSchema):
    status = fields.String(
        required=True,
        metadata={
            "enum": list(OPERATION_STATUSES),
            "description": (
                "completed: the batch answered, and this is its answer; in_progress: its "
                "request is still at work; interrupted: its server stopped before answering, "
                "the deletions stand and the reconciler removes the queued vectors"
            ),
        },
    )


class OperationResponse(Schema):
    success = fields.Boolean(required=True)
    message = fields.String(required=True)
    data = fields.Nested(BatchDataSchema, required=True)
    metadata = fields.Nested(OperationMetadataSchema, required=True)


class MediaSchema(Schema):
    media_id = fields.String(required=True)
    title = fields.String(allow_none=True)
    metadata = fields.Dict(allow_none=True)
    hd_vectors = fields.Integer(required=True)
    ld_vectors = fields.Integer(required=True)
    created_at = fields.String(required=True, metadata={"format": "date-time"})


class MediaResponse(Schema):
    success = fields.Boolean(required=True)
    data = fields.Nested(MediaSchema, required=True)


class MediaPageSchema(Schema):
    items = fields.List(fields.Nested(MediaSchema), required=True)
    has_more = fields.Boolean(
        required=True, metadata={"description": "true: ask again with next_cursor for more"}
    )
    next_cursor = fields.String(
        required=True,
        allow_none=True,
        metadata={"description": "Opaque; null on the last page"},
    )


class MediaListResponse(Schema):
    success = fields.Boolean(required=True)
    data = fields.Nested(MediaPageSchema, required=True)


class CreatedMediaSchema(Schema):
    media_id = fields.String(required=True)
    hd_vectors = fields.Integer(required=True)
    ld_vectors = fields.Integer(required=True)
    created_at = fields.String(required=True, metadata={"format": "date-time"})


class CreatedMediaResponse(Schema):
    success = fields.Boolean(required=True)
    data = fields.Nested(CreatedMediaSchema, required=True)


class SearchHitSchema(Schema):
    media_id = fields.String(required=True)
    score = fields.Float(required=True)


class SearchResultsSchema(Schema):
    results = fields.List(fields.Nested(SearchHitSchema), required=True)


class SearchResponse(Schema):
    success = fields.Boolean(required=True)
    data = fields.Nested(SearchResultsSchema, required=True)


class HealthDataSchema(Schema):
    status = fields.String(required=True)
    checks = fields.Dict(keys=fields.String(), values=fields.String())


class HealthResponse(Schema):
    success = fields.Boolean(required=True)
    data = fields.Nested(HealthDataSchema, required=True)


class ErrorDetailSchema(Schema):
    code = fields.String(required=True)
    details = fields.Dict(required=True, metadata={"description": "Always holds request_id"})


class ErrorResponse(Schema):
    success = fields.Boolean(required=True, metadata={"enum": [False]})
    message = fields.String(required=True)
    error = fields.Nested(ErrorDetailSchema, required=True)


class JobProgressSchema(Schema):
    total = fields.Integer(
        required=True,
        allow_none=True,
        metadata={"description": "Manifest size; null until the selection is resolved"},
    )
    remaining = fields.Integer(
        required=True, allow_none=True, metadata={"description": "total - deleted - failed"}
    )
    deleted = fields.Integer(required=True)
    failed = fields.Integer(required=True)
    hd_vectors = fields.Integer(
        required=True, metadata={"description": "Points of the deleted media, HD space"}
    )
    ld_vectors = fields.Integer(
        required=True, metadata={"description": "Points of the deleted media, LD space"}
    )


class JobErrorSchema(Schema):
    code = fields.String(required=True)
    message = fields.String(required=True)


class JobSchema(Schema):
    job_id = fields.String(required=True)
    status = fields.String(required=True, metadata={"enum": list(JOB_STATUSES)})
    reason = fields.String(required=True, allow_none=True)
    cascade = fields.Boolean(required=True)
    created_at = fields.String(required=True, metadata={"format": "date-time"})
    updated_at = fields.String(required=True, metadata={"format": "date-time"})
    finished_at = fields.String(required=True, allow_none=True, metadata={"format": "date-time"})
    progress = fields.Nested(JobProgressSchema, required=True)
    error = fields.Nested(
        JobErrorSchema, metadata={"description": "Present on a rejected job: why it was"}
    )


class JobResponse(Schema):
    success = fields.Boolean(required=True)
    data = fields.Nested(JobSchema, required=True)


class JobPageSchema(Schema):
    items = fields.List(fields.Nested(JobSchema), required=True)
    has_more = fields.Boolean(required=True)
    next_cursor = fields.String(required=True, allow_none=True)


class JobListResponse(Schema):
    success = fields.Boolean(required=True)
    data = fields.Nested(JobPageSchema, required=True)


class JobItemSchema(Schema):
    media_id = fields.String(required=True)
    status = fields.String(required=True, metadata={"enum": list(ITEM_STATUSES)})
    reason = fields.String(
        metadata={"enum": list(FAILURE_REASONS), "description": "Present on a failed item"}
    )
    operation_id = fields.String(
        required=True, metadata={"description": "The chunk's operation (GET /v1/operations/<id>)"}
    )


class JobItemPageSchema(Schema):
    items = fields.List(fields.Nested(JobItemSchema), required=True)
    has_more = fields.Boolean(required=True)
    next_cursor = fields.String(required=True, allow_none=True)


class JobItemsResponse(Schema):
    success = fields.Boolean(required=True)
    data = fields.Nested(JobItemPageSchema, required=True)


class JobPreviewSchema(Schema):
    total = fields.Integer(required=True, metadata={"description": "Media that would be deleted"})
    hd_vectors = fields.Integer(required=True)
    ld_vectors = fields.Integer(required=True)
    sample = fields.List(
        fields.String(), required=True, metadata={"description": "The first 20 of them"}
    )


class JobPreviewMetadataSchema(Schema):
    dry_run = fields.Boolean(required=True, metadata={"enum": [True]})


class JobPreviewResponse(Schema):
    success = fields.Boolean(required=True)
    data = fields.Nested(JobPreviewSchema, required=True)
    metadata = fields.Nested(JobPreviewMetadataSchema, required=True)
