"""GET /openapi.json: OpenAPI 3.1 generated from the marshmallow schemas, built per app.

The document states what this app enforces: vector sizes are its HD_DIM/LD_DIM, the batch
size its MAX_BATCH_SIZE, body limits its MAX_CONTENT_LENGTH. Every method a path answers is
documented (HEAD beside each GET; OPTIONS is not served, see config.flask_config), and a
test compares it with the app's URL map.
"""

from __future__ import annotations

import copy
from typing import Any

from apispec import APISpec
from apispec.ext.marshmallow import MarshmallowPlugin
from flask import Blueprint, current_app
from flask.typing import ResponseReturnValue
from marshmallow import Schema

from ..config import Settings
from ..protocol import (
    API_KEY_HEADER,
    DEFAULT_PAGE_SIZE,
    IDEMPOTENCY_KEY_HEADER,
    ITEM_STATUSES,
    JOBS_PATH,
    MAX_PAGE_SIZE,
    MEDIA_ID_PATTERN,
    REPLAYED_HEADER,
    REQUEST_ID_HEADER,
    RESERVED_MEDIA_SEGMENTS,
)
from ..services.paging import CURSOR_PATTERN
from ..services.selection import MAX_QUERY_VALUE_CHARS, TIME_PATTERN
from . import docs, schemas
from .context import settings
from .jobs import JOB_ID_PATTERN, MAX_CURSOR
from .requests import FLAG_FALSE, FLAG_TRUE, IDEMPOTENCY_KEY_PATTERN

bp = Blueprint("openapi", __name__)

_ERROR_TEXT = {
    400: (
        "Invalid request (MISSING_MEDIA_IDS, INVALID_MEDIA_IDS, BATCH_TOO_LARGE, "
        "INVALID_REQUEST, INVALID_SELECTION)"
    ),
    401: "Missing, unknown or revoked API key (INVALID_API_KEY)",
    403: "The key lacks the scope (INSUFFICIENT_PERMISSIONS)",
    404: "Not found (MEDIA_NOT_FOUND, OPERATION_NOT_FOUND, JOB_NOT_FOUND)",
    405: (
        "The path is another route's: media_id is one of its fixed segments, never an id "
        "(METHOD_NOT_ALLOWED); Allow lists that route's methods"
    ),
    409: "The first request with this Idempotency-Key is still running (IDEMPOTENCY_KEY_IN_USE)",
    413: "Body too large (PAYLOAD_TOO_LARGE)",
    415: "Not application/json (UNSUPPORTED_MEDIA_TYPE)",
    422: "Idempotency-Key already used with another body (IDEMPOTENCY_KEY_REUSED)",
    429: (
        "Rate limit exceeded, or too many failed authentications from this address "
        "(RATE_LIMIT_EXCEEDED); see Retry-After"
    ),
    500: "Unexpected error (PROCESSING_ERROR); quote the request_id",
    503: (
        "A store is unavailable, locked or slow; nothing was changed (SERVICE_UNAVAILABLE); "
        "see Retry-After"
    ),
}

_INT_HEADER = {"schema": {"type": "integer"}, "required": True}
_REQUEST_ID = {
    "required": True,
    "description": "Echoes a sane incoming id, else a new one",
    "schema": {"type": "string"},
}
_COMMON_HEADERS = {
    REQUEST_ID_HEADER: _REQUEST_ID,
    "X-Content-Type-Options": {
        "description": "Always nosniff",
        "schema": {"type": "string", "enum": ["nosniff"]},
        "required": True,
    },
    "Cache-Control": {
        "description": "Always no-store",
        "schema": {"type": "string", "enum": ["no-store"]},
        "required": True,
    },
}
_LIMIT_HEADERS = {
    "X-RateLimit-Limit": {"description": "Requests allowed in the window", **_INT_HEADER},
    "X-RateLimit-Remaining": {"description": "Requests left in the window", **_INT_HEADER},
    "X-RateLimit-Reset": {"description": "Unix time the window resets", **_INT_HEADER},
}
_RETRY_AFTER = {
    "description": "Seconds to wait, at least 1",
    "schema": {"type": "integer", "minimum": 1},
    "required": True,
}
_IGNORED_IDEMPOTENCY = (
    f" An `{IDEMPOTENCY_KEY_HEADER}` header is ignored here: the operation changes nothing."
)


def _response(description: str, schema: str, *, limited: bool, status: int = 200) -> dict[str, Any]:
    headers: dict[str, Any] = dict(_COMMON_HEADERS)
    if limited:
        headers.update(_LIMIT_HEADERS)
    if status in (409, 429, 503):
        headers["Retry-After"] = _RETRY_AFTER
    if status == 405:
        headers["Allow"] = {
            "description": "The methods the path answers",
            "schema": {"type": "string"},
            "required": True,
        }
    return {
        "description": description,
        "headers": headers,
        "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{schema}"}}},
    }


def _operation(
    operation_id: str,
    summary: str,
    ok: tuple[int, str, str],
    errors: list[int],
    *,
    scope: str | None = None,
    body: tuple[str, int] | None = None,
    parameters: list[dict[str, Any]] | None = None,
    note: str = "",
) -> dict[str, Any]:
    limited = scope is not None
    status, description, schema = ok
    responses = {str(status): _response(description, schema, limited=limited)}
    for code in errors:
        # A 405 is answered by routing, before the limiter counts anything.
        responses[str(code)] = _response(
            _ERROR_TEXT[code], "ErrorResponse", limited=limited and code != 405, status=code
        )
    operation: dict[str, Any] = {
        "operationId": operation_id,
        "summary": summary,
        "responses": responses,
    }
    description = note
    if scope is not None:
        operation["security"] = [{"ApiKey": []}]
        description = f"Requires an API key with the `{scope}` scope.{note}"
    if description:
        operation["description"] = description.strip()
    if body is not None:
        name, max_bytes = body
        operation["requestBody"] = {
            "required": True,
            "description": (
                f"JSON (`Content-Type: application/json`, else 415), at most {max_bytes} bytes "
                "(else 413). Duplicate keys in an object are refused (400)."
            ),
            "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{name}"}}},
        }
    if parameters:
        operation["parameters"] = parameters
    return operation


def _head(get: dict[str, Any]) -> dict[str, Any]:
    """The HEAD twin of a GET operation: the same statuses and headers, no body."""
    head = copy.deepcopy(get)
    head["operationId"] = "head" + get["operationId"][0].upper() + get["operationId"][1:]
    head["summary"] = get["summary"] + " (headers only)"
    for response in head["responses"].values():
        response.pop("content", None)
    return head


def _dry_run() -> dict[str, Any]:
    values = sorted(FLAG_TRUE) + sorted(FLAG_FALSE)
    return {
        "name": "dry_run",
        "in": "query",
        "required": False,
        "description": (
            "true (or 1): report what would be deleted, change and store nothing; false (or 0, "
            "or absent): delete. Exactly these spellings; given twice it is refused (400)."
        ),
        "schema": {"type": "string", "enum": values},
    }


_IDEMPOTENCY_KEY = {
    "name": IDEMPOTENCY_KEY_HEADER,
    "in": "header",
    "required": False,
    "description": (
        "Any unique string per logical request (a UUID): a retry with the same key and body "
        "within 24 hours replays the first answer and deletes nothing more. Scoped to the "
        "API key. On a dry run it must still be well-formed, and is otherwise ignored. Sent "
        "twice, it is refused (400)."
    ),
    "schema": {"type": "string", "pattern": IDEMPOTENCY_KEY_PATTERN},
}
_BODY_ERRORS = [400, 401, 403, 413, 415, 429, 500, 503]
_READ_ERRORS = [401, 403, 404, 429, 500, 503]
_SCHEMAS: dict[str, type[Schema]] = {
    "BatchDeleteRequest": schemas.BatchDeleteRequest,
    "BatchDeleteResponse": schemas.BatchDeleteResponse,
    "CreateMediaRequest": schemas.CreateMediaRequest,
    "CreatedMediaResponse": schemas.CreatedMediaResponse,
    "MediaResponse": schemas.MediaResponse,
    "MediaListResponse": schemas.MediaListResponse,
    "OperationResponse": schemas.OperationResponse,
    "SearchRequest": schemas.SearchRequest,
    "SearchResponse": schemas.SearchResponse,
    "CreateJobRequest": schemas.CreateJobRequest,
    "JobResponse": schemas.JobResponse,
    "JobListResponse": schemas.JobListResponse,
    "JobItemsResponse": schemas.JobItemsResponse,
    "JobPreviewResponse": schemas.JobPreviewResponse,
    "HealthResponse": schemas.HealthResponse,
    "ErrorResponse": schemas.ErrorResponse,
}
# Text columns hold no NUL (a lone surrogate is refused too; JSON Schema cannot say so).
_NO_NUL = "^[^\\u0000]*$"


def _vector(dim: int, space: str) -> dict[str, Any]:
    return {
        "type": "array",
        "description": (
            f"One {space.upper()} vector: exactly {dim} JSON numbers, each within "
            f"±{schemas.MAX_VECTOR_VALUE:g}, at least one of magnitude {schemas.MIN_VECTOR_PEAK:g} "
            "or more (so that its norm is finite and not zero in 32-bit floats)"
        ),
        "minItems": dim,
        "maxItems": dim,
        "items": {
            "type": "number",
            "minimum": -schemas.MAX_VECTOR_VALUE,
            "maximum": schemas.MAX_VECTOR_VALUE,
        },
        "contains": {
            "anyOf": [
                {"minimum": schemas.MIN_VECTOR_PEAK},
                {"maximum": -schemas.MIN_VECTOR_PEAK},
            ]
        },
    }


def _constrain(document: dict[str, Any], config: Settings) -> None:
    """Add what marshmallow cannot say: this app's sizes, and the rules across fields."""
    components = document["components"]["schemas"]
    components["HdVector"] = _vector(config.hd_dim, "hd")
    components["LdVector"] = _vector(config.ld_dim, "ld")

    batch = components["BatchDeleteRequest"]
    batch["properties"]["media_ids"]["maxItems"] = config.max_batch_size
    batch["properties"]["reason"]["pattern"] = _NO_NUL

    create = components["CreateMediaRequest"]
    properties = create["properties"]
    properties["title"]["pattern"] = _NO_NUL
    properties["metadata"]["description"] = (
        f"Any JSON object, at most {schemas.MAX_METADATA_BYTES} bytes as JSON"
    )
    for space in ("hd", "ld"):
        vectors = properties[f"{space}_vectors"]
        vectors["items"] = {"$ref": f"#/components/schemas/{space.capitalize()}Vector"}
        vectors["description"] = f"0 to {schemas.MAX_VECTORS} vectors (default none)"
    create["description"] = "At least one vector, in hd_vectors or ld_vectors."
    create["anyOf"] = [
        {"required": [f"{space}_vectors"], "properties": {f"{space}_vectors": {"minItems": 1}}}
        for space in ("hd", "ld")
    ]

    job = components["CreateJobRequest"]
    job["properties"]["reason"]["pattern"] = _NO_NUL
    job["properties"]["selection"]["minItems"] = 1

    search = components["SearchRequest"]
    search["properties"]["vector"] = {
        "type": "array",
        "description": "A vector of the chosen space (HdVector or LdVector)",
    }
    search["anyOf"] = [
        {
            "properties": {
                "space": {"const": space},
                "vector": {"$ref": f"#/components/schemas/{space.capitalize()}Vector"},
            }
        }
        for space in ("hd", "ld")
    ]


def _plain(description: str, media_types: list[str], headers: dict[str, Any]) -> dict[str, Any]:
    return {
        "description": description,
        "headers": headers,
        "content": {media: {"schema": {"type": "string"}} for media in media_types},
    }


def _get_and_head(spec: APISpec, path: str, get: dict[str, Any]) -> None:
    spec.path(path, operations={"get": get, "head": _head(get)})


def _operator_paths(spec: APISpec, metrics: bool) -> None:
    """Document the routes for people and scrapers: /docs, its files, /metrics (if served)."""
    page_headers = {
        **_COMMON_HEADERS,
        "Content-Security-Policy": {
            "description": "Scripts from this server only",
            "schema": {"type": "string", "enum": [docs.CONTENT_SECURITY_POLICY]},
            "required": True,
        },
        "Referrer-Policy": {
            "schema": {"type": "string", "enum": ["no-referrer"]},
            "required": True,
        },
    }
    _get_and_head(
        spec,
        "/docs",
        {
            "operationId": "getDocs",
            "summary": "This reference, interactive (Swagger UI)",
            "responses": {"200": _plain("An HTML page", ["text/html"], page_headers)},
        },
    )
    _get_and_head(
        spec,
        "/docs/{name}",
        {
            "operationId": "getDocsAsset",
            "summary": "A file the /docs page loads",
            "parameters": [
                {
                    "name": "name",
                    "in": "path",
                    "required": True,
                    "schema": {"type": "string", "enum": list(docs.ASSETS)},
                }
            ],
            "responses": {
                "200": _plain(
                    "The file", ["text/javascript", "text/css", "image/png"], _COMMON_HEADERS
                ),
                "404": _response(
                    "Not one of the page's files (NOT_FOUND)", "ErrorResponse", limited=False
                ),
            },
        },
    )
    if not metrics:
        return
    _get_and_head(
        spec,
        "/metrics",
        {
            "operationId": "getMetrics",
            "summary": "Prometheus metrics, for the operators' scraper only",
            "responses": {
                "200": _plain("Prometheus text format 0.0.4", ["text/plain"], _COMMON_HEADERS)
            },
        },
    )


def _path_id(name: str, description: str, reserved: bool = False) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "string", "pattern": MEDIA_ID_PATTERN}
    if reserved:
        schema["not"] = {"enum": sorted(RESERVED_MEDIA_SEGMENTS)}
    return {
        "name": name,
        "in": "path",
        "required": True,
        "description": description,
        "schema": schema,
    }


def _query(name: str, description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "description": description,
        "schema": schema,
    }


_PAGING = [
    _query(
        "limit",
        "Items per page (default 20). Given twice, it is refused (400).",
        {"type": "string", "pattern": "^0*([1-9]|[1-9][0-9]|100)$"},
    ),
    _query(
        "cursor",
        "The next_cursor of the previous page, unchanged; absent: the first page. Given "
        "twice, it is refused (400).",
        {"type": "string", "minLength": 1, "maxLength": MAX_CURSOR},
    ),
]
_JOB_ID_PARAMETER = {
    "name": "job_id",
    "in": "path",
    "required": True,
    "description": "The job_id of a deletion job (another owner's is not found)",
    "schema": {"type": "string", "pattern": JOB_ID_PATTERN},
}
_EITHER_SCOPE = (
    " An API key of the same owner with the `media:delete` scope will do too."
    + _IGNORED_IDEMPOTENCY
)


def _job_paths(spec: APISpec, body_bytes: int) -> None:
    """Document the deletion-job routes (DESIGN section 9)."""
    create = _operation(
        "createDeletionJob",
        "Start a background deletion of a selection",
        (202, "Accepted: the job, queued (or the first job made with this key)", "JobResponse"),
        sorted([*_BODY_ERRORS, 422]),
        scope="media:delete",
        body=("CreateJobRequest", body_bytes),
        parameters=[_dry_run(), _IDEMPOTENCY_KEY],
        note=(
            " The selection is resolved when the job starts, then deleted chunk by chunk, "
            "each chunk one operation. With `dry_run=true` the answer is 200 with what "
            "would be deleted now, and nothing is stored."
        ),
    )
    accepted = create["responses"]["202"]
    accepted["headers"]["Location"] = {
        "description": "The job's URL",
        "schema": {"type": "string"},
        "required": True,
    }
    accepted["headers"][REPLAYED_HEADER] = {
        "description": "true when this is the job the Idempotency-Key first made",
        "schema": {"type": "string", "enum": ["true"]},
        "required": False,
    }
    accepted["links"] = {
        "GetDeletionJob": {
            "operationId": "getDeletionJob",
            "parameters": {"job_id": "$response.body#/data/job_id"},
        }
    }
    create["responses"]["200"] = _response(
        "Dry run: what the job would delete now", "JobPreviewResponse", limited=True
    )
    listing = _operation(
        "listDeletionJobs",
        "The caller's deletion jobs, newest first",
        (200, "A page of jobs", "JobListResponse"),
        [400, 401, 403, 429, 500, 503],
        scope="media:read",
        parameters=_PAGING,
        note=_EITHER_SCOPE,
    )
    spec.path(JOBS_PATH, operations={"post": create, "get": listing, "head": _head(listing)})
    _get_and_head(
        spec,
        JOBS_PATH + "/{job_id}",
        _operation(
            "getDeletionJob",
            "One deletion job and its progress",
            (200, "The job", "JobResponse"),
            _READ_ERRORS,
            scope="media:read",
            parameters=[_JOB_ID_PARAMETER],
            note=_EITHER_SCOPE,
        ),
    )
    status = _query(
        "status",
        "Only the items with this outcome; absent: both (ids not reached yet are never "
        "listed). Given twice, it is refused (400).",
        {"type": "string", "enum": list(ITEM_STATUSES)},
    )
    _get_and_head(
        spec,
        JOBS_PATH + "/{job_id}/items",
        _operation(
            "listDeletionJobItems",
            "A deletion job's per-item outcomes, in manifest order",
            (200, "A page of outcomes", "JobItemsResponse"),
            sorted([400, *_READ_ERRORS]),
            scope="media:read",
            parameters=[_JOB_ID_PARAMETER, status, *_PAGING],
            note=_EITHER_SCOPE,
        ),
    )
    cancel = _operation(
        "cancelDeletionJob",
        "Cancel a deletion job between two chunks",
        (
            200,
            "The job: cancelled, or still processing until its chunk at work commits",
            "JobResponse",
        ),
        [401, 403, 404, 409, 429, 500, 503],
        scope="media:delete",
        parameters=[_JOB_ID_PARAMETER],
        note=" Any body is ignored." + _IGNORED_IDEMPOTENCY,
    )
    finished = _response(
        "The job has already ended: done, cancelled or rejected (JOB_FINISHED)",
        "ErrorResponse",
        limited=True,
    )
    cancel["responses"]["409"] = finished
    spec.path(JOBS_PATH + "/{job_id}/cancel", operations={"post": cancel})


_TIME = (
    "ISO-8601: a date (2025-06-01, midnight UTC) or a date and time (2025-06-01T12:00, "
    "to the minute, second or microsecond), with an offset (Z, +02:00) or without (UTC)"
)


def _listing_parameters() -> list[dict[str, Any]]:
    """`GET /v1/media`'s query: paging, then the filter (docs/api.md, Listing media)."""
    return [
        _query(
            "limit",
            f"Media per page, 1 to {MAX_PAGE_SIZE} (default {DEFAULT_PAGE_SIZE})",
            {"type": "integer", "minimum": 1, "maximum": MAX_PAGE_SIZE},
        ),
        _query(
            "cursor",
            "The next_cursor of the previous page, as it was given, with the same filter "
            "parameters (another owner's or another filter's cursor is 400)",
            {"type": "string", "pattern": CURSOR_PATTERN},
        ),
        _query(
            "created_before",
            f"Only media created before this moment (exclusive). {_TIME}",
            {"type": "string", "pattern": TIME_PATTERN},
        ),
        _query(
            "created_after",
            f"Only media created at or after this moment (inclusive). {_TIME}",
            {"type": "string", "pattern": TIME_PATTERN},
        ),
        _query(
            "parent_id",
            "Only the media derived from this media (its direct children)",
            {"type": "string", "pattern": MEDIA_ID_PATTERN},
        ),
        _query(
            "metadata.KEY",
            "Stands for `metadata.<key>=<value>`, for any top-level metadata key, once per "
            "key (several are ANDed): only media whose metadata has that key equal to the "
            'value. A value that is a JSON number, true, false or a "quoted string" is that '
            'JSON value (metadata.n=1 matches the number 1, never the string "1"; '
            'metadata.n="1" the string); anything else is the text as it stands. At most '
            f"{MAX_QUERY_VALUE_CHARS} characters (a selection's JSON filter takes longer ones).",
            {"type": "string", "maxLength": MAX_QUERY_VALUE_CHARS, "pattern": _NO_NUL},
        ),
    ]


def build_spec(config: Settings) -> dict[str, Any]:
    """Return the OpenAPI 3.1 document of every route of an app built with `config`."""
    spec = APISpec(
        title="wickson-batch",
        version="1.0.0",
        openapi_version="3.1.0",
        plugins=[MarshmallowPlugin()],
        info={
            "description": (
                "Batch deletion of media and their vectors. Every error, 404 and 405 "
                "included, is the ErrorResponse envelope; a method a path does not list "
                "(OPTIONS included: no CORS is offered) is 405 METHOD_NOT_ALLOWED with Allow."
            )
        },
    )
    spec.components.security_scheme(
        "ApiKey", {"type": "apiKey", "in": "header", "name": API_KEY_HEADER}
    )
    for name, schema in _SCHEMAS.items():
        spec.components.schema(name, schema=schema)
    max_batch = config.max_batch_size
    body_bytes, media_bytes = config.max_content_length, config.media_max_content_length
    batch = _operation(
        "deleteBatch",
        f"Delete up to {max_batch} media and their vectors",
        (200, "Processed; per-item outcomes inside", "BatchDeleteResponse"),
        sorted([*_BODY_ERRORS, 409, 422]),
        scope="media:delete",
        body=("BatchDeleteRequest", body_bytes),
        parameters=[_dry_run(), _IDEMPOTENCY_KEY],
    )
    batch["responses"]["200"]["headers"][REPLAYED_HEADER] = {
        "description": "true when this answer replays the first one given for the "
        "Idempotency-Key (nothing was deleted again)",
        "schema": {"type": "string", "enum": ["true"]},
        "required": False,
    }
    batch["responses"]["200"]["links"] = {
        "GetOperation": {
            "operationId": "getOperation",
            "description": "A dry run's operation is not stored: it is not found",
            "parameters": {"operation_id": "$response.body#/metadata/operation_id"},
        },
        "HeadOperation": {
            "operationId": "headGetOperation",
            "parameters": {"operation_id": "$response.body#/metadata/operation_id"},
        },
    }
    spec.path("/v1/media/batch", operations={"delete": batch})
    spec.path(
        "/v1/media/batch/delete",
        operations={
            "post": {
                **batch,
                "operationId": "deleteBatchPost",
                "summary": batch["summary"] + " (POST alias)",
            }
        },
    )
    create = _operation(
        "createMedia",
        "Create a media with its vectors",
        (201, "Created", "CreatedMediaResponse"),
        _BODY_ERRORS,
        scope="media:write",
        body=("CreateMediaRequest", media_bytes),
        note=(
            f" An `{IDEMPOTENCY_KEY_HEADER}` header is refused (400 INVALID_REQUEST): "
            "creating is not idempotent here, and a retry would create a second media."
        ),
    )
    create["responses"]["201"]["links"] = {
        "GetCreatedMedia": {
            "operationId": "getMedia",
            "parameters": {"media_id": "$response.body#/data/media_id"},
        },
        "HeadCreatedMedia": {
            "operationId": "headGetMedia",
            "parameters": {"media_id": "$response.body#/data/media_id"},
        },
    }
    listing = _operation(
        "listMedia",
        "List the caller's live media, oldest first, a page at a time",
        (200, "A page of media, and the cursor of the next", "MediaListResponse"),
        sorted([400, *_READ_ERRORS]),
        scope="media:read",
        parameters=_listing_parameters(),
        note=(
            " Ordered by (created_at, media_id). Paging from the first page until has_more "
            "is false returns each media that stays live meanwhile exactly once; an unknown "
            "query parameter, or one given twice, is 400 INVALID_REQUEST naming it."
            + _IGNORED_IDEMPOTENCY
        ),
    )
    listing["responses"].pop("404")  # a listing of nothing is an empty page
    spec.path("/v1/media", operations={"get": listing, "head": _head(listing), "post": create})
    spec.path(
        "/v1/media/search",
        operations={
            "post": _operation(
                "searchMedia",
                "Search the caller's live media",
                (200, "Nearest media, best first", "SearchResponse"),
                _BODY_ERRORS,
                scope="media:read",
                body=("SearchRequest", body_bytes),
                note=_IGNORED_IDEMPOTENCY,
            )
        },
    )
    _get_and_head(
        spec,
        "/v1/media/{media_id}",
        _operation(
            "getMedia",
            "Read one of the caller's media",
            (200, "The media", "MediaResponse"),
            sorted([*_READ_ERRORS, 405]),
            scope="media:read",
            parameters=[
                _path_id(
                    "media_id",
                    "A media id (server-made ids are vec-<hex>); the fixed segments of "
                    "the other /v1/media/ routes are never ids",
                    reserved=True,
                )
            ],
            note=_IGNORED_IDEMPOTENCY,
        ),
    )
    _get_and_head(
        spec,
        "/v1/operations/{operation_id}",
        _operation(
            "getOperation",
            "What a past batch deletion did",
            (200, "Its stored answer, with its status", "OperationResponse"),
            _READ_ERRORS,
            scope="media:read",
            parameters=[_path_id("operation_id", "The metadata.operation_id of a batch")],
            note=(
                " An API key of the same owner with the `media:delete` scope will do too; "
                "another owner's operation is not found." + _IGNORED_IDEMPOTENCY
            ),
        ),
    )
    _job_paths(spec, body_bytes)
    _get_and_head(
        spec,
        "/healthz",
        _operation("getHealth", "Liveness", (200, "Alive", "HealthResponse"), [500]),
    )
    _get_and_head(
        spec,
        "/readyz",
        _operation(
            "getReadiness", "Readiness of both stores", (200, "Ready", "HealthResponse"), [500, 503]
        ),
    )
    _get_and_head(
        spec,
        "/openapi.json",
        {
            "operationId": "getOpenApi",
            "summary": "This document",
            "responses": {
                "200": {
                    "description": "OpenAPI 3.1",
                    "headers": _COMMON_HEADERS,
                    "content": {"application/json": {"schema": {"type": "object"}}},
                }
            },
        },
    )
    _operator_paths(spec, config.metrics_enabled)
    document = spec.to_dict()
    _constrain(document, config)
    return document


@bp.route("/openapi.json", methods=["GET"])
def openapi() -> ResponseReturnValue:
    """Serve the OpenAPI document."""
    cached = current_app.extensions.get("wickson_openapi")
    if cached is None:
        cached = build_spec(settings())
        current_app.extensions["wickson_openapi"] = cached
    return cached
