"""Media routes: thin views that load a schema, call a service and dump the result."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

from flask import Blueprint, Response, jsonify, request
from flask.typing import ResponseReturnValue
from marshmallow import Schema
from werkzeug.routing import BaseConverter

from ..models import iso_utc
from ..protocol import (
    DEFAULT_PAGE_SIZE,
    MAX_PAGE_SIZE,
    REPLAYED_HEADER,
    RESERVED_MEDIA_SEGMENTS,
    Scope,
    is_media_id,
)
from ..services import deletion, media
from ..services.deletion import BatchOutcome
from ..services.errors import MediaNotFound
from ..services.media import MediaView
from ..services.selection import filter_from_query
from . import metrics
from .auth import require_principal, require_scope
from .context import settings, stores
from .errors import InvalidRequest
from .requests import (
    idempotency_key,
    json_object,
    load,
    load_batch_request,
    query_flag,
    query_int,
    query_value,
    refuse_idempotency_key,
)
from .schemas import (
    BatchDeleteResponse,
    CreatedMediaResponse,
    CreateMediaRequest,
    MediaListResponse,
    MediaResponse,
    SearchRequest,
    SearchResponse,
)

bp = Blueprint("media", __name__, url_prefix="/v1/media")


class MediaIdConverter(BaseConverter):
    """`<media_id:...>`: one path segment that is not a reserved word (RESERVED_MEDIA_SEGMENTS).

    Refused in the pattern itself, so that routing never offers `/v1/media/<media_id>` for
    `/v1/media/batch`: werkzeug answers 405 with the Allow of the fixed route alone.
    A malformed id still reaches the view, which answers MEDIA_NOT_FOUND.
    """

    regex = (
        "(?!(?:"
        + "|".join(re.escape(word) for word in sorted(RESERVED_MEDIA_SEGMENTS))
        + r")\Z)[^/]+"
    )


_batch_response = BatchDeleteResponse()
_media_response = MediaResponse()
_list_response = MediaListResponse()
_created_response = CreatedMediaResponse()
_search_response = SearchResponse()
_create_request = CreateMediaRequest()
_search_request = SearchRequest()


def dump(schema: Schema, body: dict[str, Any]) -> dict[str, Any]:
    """Serialise a response body through its schema."""
    data: dict[str, Any] = schema.dump(body)
    return data


def batch_body(outcome: BatchOutcome) -> dict[str, Any]:
    """Return the documented batch response for an outcome."""
    deleted: dict[str, Any] = {
        "count": len(outcome.deleted),
        "media_ids": outcome.deleted_ids,
        "hd_vectors": outcome.vectors_removed["hd"],
        "ld_vectors": outcome.vectors_removed["ld"],
    }
    if outcome.cleanup_pending:
        deleted["cleanup_pending"] = outcome.cleanup_pending
    metadata: dict[str, Any] = {
        "operation_id": outcome.operation_id,
        "timestamp": iso_utc(outcome.timestamp),
        "processing_time_ms": outcome.processing_time_ms,
        "reason": outcome.reason,
    }
    if outcome.dry_run:
        message = (
            f"Dry run: {len(outcome.deleted)} would be deleted, {len(outcome.failed)} would fail"
        )
        metadata["dry_run"] = True
    else:
        message = (
            f"Batch deletion completed: {len(outcome.deleted)} deleted, "
            f"{len(outcome.failed)} failed"
        )
    return {
        "success": True,
        "message": message,
        "data": {
            "deleted": deleted,
            "failed": {
                "count": len(outcome.failed),
                "media_ids": list(outcome.failed),
                "reasons": outcome.failed,
            },
        },
        "metadata": metadata,
    }


def in_flight() -> timedelta:
    """How long a request may still be at work: the reconciler's grace period."""
    return timedelta(seconds=settings().reconcile_grace_seconds)


@bp.route("/batch", methods=["DELETE"])
@require_scope(Scope.DELETE)
def delete_batch() -> ResponseReturnValue:
    """Delete up to MAX_BATCH_SIZE of the caller's media and their vectors."""
    principal = require_principal()
    dry_run = query_flag("dry_run")
    key = idempotency_key()  # checked on a dry run too, as documented, then ignored there
    if dry_run:
        key = None  # a dry run changes nothing to repeat
    media_ids, reason = load_batch_request(json_object(), settings().max_batch_size)
    held = stores()
    if dry_run:
        outcome = deletion.preview_batch(
            held.db, owner=principal.owner, media_ids=media_ids, reason=reason
        )
    else:
        outcome = deletion.delete_batch(
            held.db,
            held.vectors,
            owner=principal.owner,
            media_ids=media_ids,
            reason=reason,
            api_key_id=principal.key_id,
            idempotency_key=key,
            in_flight=in_flight(),
        )
    if not (outcome.dry_run or outcome.replayed):
        metrics.observe_batch(outcome)  # counted once, when it happens
    response: Response = jsonify(dump(_batch_response, batch_body(outcome)))
    if outcome.replayed:
        response.headers[REPLAYED_HEADER] = "true"
    return response


# Some clients and proxies drop DELETE bodies: the same operation as a POST.
bp.add_url_rule(
    "/batch/delete", endpoint="delete_batch_post", view_func=delete_batch, methods=["POST"]
)


@bp.route("", methods=["POST"])
@require_scope(Scope.WRITE)
def create() -> ResponseReturnValue:
    """Create a media with its HD and LD vectors."""
    principal = require_principal()
    refuse_idempotency_key("creating is not idempotent, and a retry would create a second media")
    data = load(_create_request, json_object(settings().media_max_content_length))
    held = stores()
    view = media.create_media(
        held.db,
        held.vectors,
        owner=principal.owner,
        hd_vectors=data["hd_vectors"],
        ld_vectors=data["ld_vectors"],
        title=data["title"],
        metadata=data["metadata"],
    )
    body = {
        "success": True,
        "data": {
            "media_id": view.media_id,
            "hd_vectors": view.hd_vectors,
            "ld_vectors": view.ld_vectors,
            "created_at": iso_utc(view.created_at),
        },
    }
    return dump(_created_response, body), 201


def media_body(view: MediaView) -> dict[str, Any]:
    """A media as `GET /v1/media/<id>` shows it, and each item of the listing."""
    return {
        "media_id": view.media_id,
        "title": view.title,
        "metadata": view.metadata,
        "hd_vectors": view.hd_vectors,
        "ld_vectors": view.ld_vectors,
        "created_at": iso_utc(view.created_at),
    }


@bp.route("/<media_id:media_id>", methods=["GET"])
@require_scope(Scope.READ)
def get(media_id: str) -> ResponseReturnValue:
    """Return one of the caller's live media."""
    principal = require_principal()
    if not is_media_id(media_id):
        raise MediaNotFound(media_id[:128])
    view = media.get_media(stores().db, owner=principal.owner, media_id=media_id)
    return dump(_media_response, {"success": True, "data": media_body(view)})


# The listing's query parameters besides the paging ones, and `metadata.KEY` for any KEY.
FILTER_PARAMETERS = ("created_before", "created_after", "parent_id")
PAGING_PARAMETERS = ("limit", "cursor")
METADATA_PREFIX = "metadata."


def _filter_parameters() -> list[tuple[str, str]]:
    """The request's filter parameters, in order; an unknown parameter is refused, named."""
    found = []
    for name, value in request.args.items(multi=True):
        if name in PAGING_PARAMETERS:
            continue
        if name not in FILTER_PARAMETERS and not name.startswith(METADATA_PREFIX):
            shown = name[:64]
            raise InvalidRequest(
                f"Unknown query parameter: {shown} (the listing takes limit, cursor, "
                "created_before, created_after, parent_id and metadata.KEY)",
                {"field": shown},
            )
        found.append((name, value))
    return found


@bp.route("", methods=["GET"])
@require_scope(Scope.READ)
def listing() -> ResponseReturnValue:
    """List the caller's live media matching the query's filter, oldest first, a page a time."""
    principal = require_principal()
    limit = query_int("limit", DEFAULT_PAGE_SIZE, 1, MAX_PAGE_SIZE)
    cursor = query_value("cursor")
    media_filter = filter_from_query(_filter_parameters())
    page = media.list_media(
        stores().db, owner=principal.owner, media_filter=media_filter, limit=limit, cursor=cursor
    )
    body = {
        "success": True,
        "data": {
            "items": [media_body(view) for view in page.items],
            "has_more": page.has_more,
            "next_cursor": page.next_cursor,
        },
    }
    return dump(_list_response, body)


@bp.route("/search", methods=["POST"])
@require_scope(Scope.READ)
def search() -> ResponseReturnValue:
    """Find the caller's live media nearest to a vector."""
    principal = require_principal()
    data = load(_search_request, json_object())
    held = stores()
    hits = media.search_media(
        held.db,
        held.vectors,
        owner=principal.owner,
        space=data["space"],
        vector=data["vector"],
        limit=data["limit"],
    )
    body = {
        "success": True,
        "data": {"results": [{"media_id": h.media_id, "score": h.score} for h in hits]},
    }
    return dump(_search_response, body)
