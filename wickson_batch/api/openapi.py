"""GET /openapi.json: OpenAPI 3.1 generated from the marshmallow schemas."""

from __future__ import annotations

from typing import Any

from apispec import APISpec
from apispec.ext.marshmallow import MarshmallowPlugin
from flask import Blueprint, current_app
from flask.typing import ResponseReturnValue
from marshmallow import Schema

from ..protocol import API_KEY_HEADER, IDEMPOTENCY_KEY_HEADER, REPLAYED_HEADER, REQUEST_ID_HEADER
from . import docs, schemas
from .context import settings

bp = Blueprint("openapi", __name__)

_ERROR_TEXT = {
    400: "Invalid request (MISSING_MEDIA_IDS, INVALID_MEDIA_IDS, BATCH_TOO_LARGE, INVALID_REQUEST)",
    401: "Missing, unknown or revoked API key (INVALID_API_KEY)",
    403: "The key lacks the scope (INSUFFICIENT_PERMISSIONS)",
    404: "Not found (MEDIA_NOT_FOUND, OPERATION_NOT_FOUND)",
    409: "The first request with this Idempotency-Key is still running (IDEMPOTENCY_KEY_IN_USE)",
    413: "Body too large (PAYLOAD_TOO_LARGE)",
    415: "Not application/json (UNSUPPORTED_MEDIA_TYPE)",
    422: "Idempotency-Key already used with another body (IDEMPOTENCY_KEY_REUSED)",
    429: "Rate limit exceeded (RATE_LIMIT_EXCEEDED); see Retry-After",
    500: "Unexpected error (PROCESSING_ERROR); quote the request_id",
    503: "A store is unavailable; nothing was changed (SERVICE_UNAVAILABLE)",
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
        "schema": {"type": "string"},
        "required": True,
    },
    "Cache-Control": {
        "description": "Always no-store",
        "schema": {"type": "string"},
        "required": True,
    },
}
_LIMIT_HEADERS = {
    "X-RateLimit-Limit": {"description": "Requests allowed in the window", **_INT_HEADER},
    "X-RateLimit-Remaining": {"description": "Requests left in the window", **_INT_HEADER},
    "X-RateLimit-Reset": {"description": "Unix time the window resets", **_INT_HEADER},
}


def _response(description: str, schema: str, *, limited: bool, status: int = 200) -> dict[str, Any]:
    headers: dict[str, Any] = dict(_COMMON_HEADERS)
    if limited:
        headers.update(_LIMIT_HEADERS)
    if status in (409, 429):
        headers["Retry-After"] = {"description": "Seconds to wait, at least 1", **_INT_HEADER}
    return {
        "description": description,
        "headers": headers,
        "content": {"application/json": {"schema": schema}},
    }


def _operation(
    summary: str,
    ok: tuple[int, str, str],
    errors: list[int],
    *,
    scope: str | None = None,
    body: str | None = None,
    parameters: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    limited = scope is not None
    status, description, schema = ok
    responses = {str(status): _response(description, schema, limited=limited)}
    for code in errors:
        responses[str(code)] = _response(
            _ERROR_TEXT[code], "ErrorResponse", limited=limited, status=code
        )
    operation: dict[str, Any] = {"summary": summary, "responses": responses}
    if scope is not None:
        operation["security"] = [{"ApiKey": []}]
        operation["description"] = f"Requires an API key with the `{scope}` scope."
    if body is not None:
        operation["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": body}},
        }
    if parameters:
        operation["parameters"] = parameters
    return operation


_DRY_RUN = {
    "name": "dry_run",
    "in": "query",
    "required": False,
    "description": "true: report what would be deleted, change and store nothing",
    "schema": {"type": "boolean", "default": False},
}
_IDEMPOTENCY_KEY = {
    "name": IDEMPOTENCY_KEY_HEADER,
    "in": "header",
    "required": False,
    "description": (
        "Any unique string per logical request (a UUID): a retry with the same key and body "
        "within 24 hours replays the first answer and deletes nothing more. Scoped to the "
        "API key; ignored on a dry run."
    ),
    "schema": {"type": "string", "minLength": 1, "maxLength": 255, "pattern": "^[!-~]+$"},
}
_BODY_ERRORS = [400, 401, 403, 413, 415, 429, 500, 503]
_SCHEMAS: dict[str, type[Schema]] = {
    "BatchDeleteRequest": schemas.BatchDeleteRequest,
    "BatchDeleteResponse": schemas.BatchDeleteResponse,
    "CreateMediaRequest": schemas.CreateMediaRequest,
    "CreatedMediaResponse": schemas.CreatedMediaResponse,
    "MediaResponse": schemas.MediaResponse,
    "OperationResponse": schemas.OperationResponse,
    "SearchRequest": schemas.SearchRequest,
    "SearchResponse": schemas.SearchResponse,
    "HealthResponse": schemas.HealthResponse,
    "ErrorResponse": schemas.ErrorResponse,
}


def _plain(description: str, media_types: list[str]) -> dict[str, Any]:
    return {
        "description": description,
        "headers": _COMMON_HEADERS,
        "content": {media: {"schema": {"type": "string"}} for media in media_types},
    }


def _operator_paths(spec: APISpec, metrics: bool) -> None:
    """Document the routes for people and scrapers: /docs, its files, /metrics (if served)."""
    not_found = _response("Not one of the page's files (NOT_FOUND)", "ErrorResponse", limited=False)
    spec.path(
        "/docs",
        operations={
            "get": {
                "summary": "This reference, interactive (Swagger UI)",
                "responses": {"200": _plain("An HTML page", ["text/html"])},
            }
        },
    )
    spec.path(
        "/docs/{name}",
        operations={
            "get": {
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
                    "200": _plain("The file", ["text/javascript", "text/css", "image/png"]),
                    "404": not_found,
                },
            }
        },
    )
    if not metrics:
        return
    spec.path(
        "/metrics",
        operations={
            "get": {
                "summary": "Prometheus metrics, for the operators' scraper only",
                "responses": {"200": _plain("Prometheus text format 0.0.4", ["text/plain"])},
            }
        },
    )


def build_spec(max_batch: int, metrics: bool = True) -> dict[str, Any]:
    """Return the OpenAPI 3.1 document of every route."""
    spec = APISpec(
        title="wickson-batch",
        version="1.0.0",
        openapi_version="3.1.0",
        plugins=[MarshmallowPlugin()],
        info={"description": "Batch deletion of media and their vectors."},
    )
    spec.components.security_scheme(
        "ApiKey", {"type": "apiKey", "in": "header", "name": API_KEY_HEADER}
    )
    for name, schema in _SCHEMAS.items():
        spec.components.schema(name, schema=schema)
    batch = _operation(
        f"Delete up to {max_batch} media and their vectors",
        (200, "Processed; per-item outcomes inside", "BatchDeleteResponse"),
        sorted([*_BODY_ERRORS, 409, 422]),
        scope="media:delete",
        body="BatchDeleteRequest",
        parameters=[_DRY_RUN, _IDEMPOTENCY_KEY],
    )
    batch["responses"]["200"]["headers"][REPLAYED_HEADER] = {
        "description": "true when this answer replays the first one given for the "
        "Idempotency-Key (nothing was deleted again)",
        "schema": {"type": "string", "enum": ["true"]},
        "required": False,
    }
    spec.path("/v1/media/batch", operations={"delete": batch})
    spec.path(
        "/v1/media/batch/delete",
        operations={"post": {**batch, "summary": batch["summary"] + " (POST alias)"}},
    )
    spec.path(
        "/v1/media",
        operations={
            "post": _operation(
                "Create a media with its vectors",
                (201, "Created", "CreatedMediaResponse"),
                _BODY_ERRORS,
                scope="media:write",
                body="CreateMediaRequest",
            )
        },
    )
    spec.path(
        "/v1/media/search",
        operations={
            "post": _operation(
                "Search the caller's live media",
                (200, "Nearest media, best first", "SearchResponse"),
                _BODY_ERRORS,
                scope="media:read",
                body="SearchRequest",
            )
        },
    )
    spec.path(
        "/v1/media/{media_id}",
        operations={
            "get": _operation(
                "Read one of the caller's media",
                (200, "The media", "MediaResponse"),
                [401, 403, 404, 429, 500, 503],
                scope="media:read",
                parameters=[
                    {
                        "name": "media_id",
                        "in": "path",
                        "required": True,
                        "schema": {"type": "string"},
                    }
                ],
            )
        },
    )
    spec.path(
        "/v1/operations/{operation_id}",
        operations={
            "get": {
                **_operation(
                    "What a past batch deletion did",
                    (200, "Its stored answer, with its status", "OperationResponse"),
                    [401, 403, 404, 429, 500, 503],
                    scope="media:read",
                    parameters=[
                        {
                            "name": "operation_id",
                            "in": "path",
                            "required": True,
                            "schema": {"type": "string"},
                        }
                    ],
                ),
                "description": (
                    "Requires an API key of the same owner with the `media:read` or "
                    "`media:delete` scope; another owner's operation is not found."
                ),
            }
        },
    )
    spec.path(
        "/healthz",
        operations={"get": _operation("Liveness", (200, "Alive", "HealthResponse"), [500])},
    )
    spec.path(
        "/readyz",
        operations={
            "get": _operation(
                "Readiness of both stores", (200, "Ready", "HealthResponse"), [500, 503]
            )
        },
    )
    spec.path(
        "/openapi.json",
        operations={
            "get": {
                "summary": "This document",
                "responses": {
                    "200": {
                        "description": "OpenAPI 3.1",
                        "headers": _COMMON_HEADERS,
                        "content": {"application/json": {"schema": {"type": "object"}}},
                    }
                },
            }
        },
    )
    _operator_paths(spec, metrics)
    document = spec.to_dict()
    # The batch size is configuration, not schema: state it where clients look.
    ids = document["components"]["schemas"]["BatchDeleteRequest"]["properties"]["media_ids"]
    ids["maxItems"] = max_batch
    return document


@bp.route("/openapi.json", methods=["GET"])
def openapi() -> ResponseReturnValue:
    """Serve the OpenAPI document."""
    cached = current_app.extensions.get("wickson_openapi")
    if cached is None:
        cached = build_spec(settings().max_batch_size, settings().metrics_enabled)
        current_app.extensions["wickson_openapi"] = cached
    return cached
