"""Deletion jobs (DESIGN section 9): thin views over services/jobs.py."""

from __future__ import annotations

import re
from typing import Any

from flask import Blueprint, Response, jsonify, request
from flask.typing import ResponseReturnValue

from ..models import iso_utc
from ..protocol import ITEM_STATUSES, JOBS_PATH, REPLAYED_HEADER, Scope
from ..services import jobs
from ..services.errors import JobNotFound
from ..services.jobs import ItemView, JobView
from ..services.paging import MAX_CURSOR_CHARS
from ..services.selection import parse_selection
from .auth import require_principal, require_scope
from .context import stores
from .errors import InvalidRequest
from .media import dump
from .requests import idempotency_key, json_object, load, query_flag
from .schemas import (
    CreateJobRequest,
    JobItemsResponse,
    JobListResponse,
    JobPreviewResponse,
    JobResponse,
)

bp = Blueprint("jobs", __name__, url_prefix=JOBS_PATH)

JOB_ID_PATTERN = "^job_[0-9a-f]{32}$"
_JOB_ID = re.compile(JOB_ID_PATTERN.strip("^$"))

_create_request = CreateJobRequest()
_job_response = JobResponse()
_list_response = JobListResponse()
_items_response = JobItemsResponse()
_preview_response = JobPreviewResponse()


def job_data(view: JobView) -> dict[str, Any]:
    """Return a job as the API shows it."""
    data: dict[str, Any] = {
        "job_id": view.job_id,
        "status": view.status,
        "reason": view.reason,
        "cascade": view.cascade,
        "created_at": iso_utc(view.created_at),
        "updated_at": iso_utc(view.updated_at),
        "finished_at": iso_utc(view.finished_at) if view.finished_at else None,
        "progress": {
            "total": view.total,
            "remaining": view.remaining,
            "deleted": view.deleted,
            "failed": view.failed,
            "hd_vectors": view.hd_vectors,
            "ld_vectors": view.ld_vectors,
        },
    }
    if view.error_code is not None:
        data["error"] = {"code": view.error_code, "message": view.error_message or ""}
    return data


def _item_data(item: ItemView) -> dict[str, Any]:
    data: dict[str, Any] = {"media_id": item.media_id, "status": item.status}
    if item.reason is not None:
        data["reason"] = item.reason
    data["operation_id"] = item.operation_id
    return data


def _job_id(raw: str) -> str:
    if not _JOB_ID.fullmatch(raw):
        raise JobNotFound(raw[:128])
    return raw


def _one(name: str) -> str | None:
    given = request.args.getlist(name)
    if len(given) > 1:
        raise InvalidRequest(
            f"Query parameter {name} was given {len(given)} times; give it once",
            {"parameter": name},
        )
    return given[0] if given else None


def _limit() -> int:
    raw = _one("limit")
    if raw is None:
        return jobs.DEFAULT_PAGE
    if not re.fullmatch(r"[0-9]{1,4}", raw) or not 1 <= int(raw) <= jobs.MAX_PAGE:
        raise InvalidRequest(
            f"Query parameter limit must be a whole number from 1 to {jobs.MAX_PAGE}",
            {"parameter": "limit", "received": raw[:64]},
        )
    return int(raw)


def _cursor() -> str | None:
    raw = _one("cursor")
    if raw is not None and (not raw or len(raw) > MAX_CURSOR_CHARS):
        raise InvalidRequest(
            "Invalid cursor: pass the next_cursor of the previous page unchanged",
            {"parameter": "cursor"},
        )
    return raw


def _located(view: JobView, replayed: bool) -> Response:
    response: Response = jsonify(dump(_job_response, {"success": True, "data": job_data(view)}))
    response.status_code = 202
    response.headers["Location"] = f"{JOBS_PATH}/{view.job_id}"
    if replayed:
        response.headers[REPLAYED_HEADER] = "true"
    return response


@bp.route("", methods=["POST"])
@require_scope(Scope.DELETE)
def create() -> ResponseReturnValue:
    """Start a deletion job for a selection (or, with ?dry_run=true, preview it)."""
    principal = require_principal()
    dry_run = query_flag("dry_run")
    key = idempotency_key()  # checked on a dry run too, then ignored there
    data = load(_create_request, json_object())
    selection = parse_selection(data["selection"])
    if data["cascade"]:
        raise InvalidRequest(
            "cascade is not supported yet: send false (or leave it out); derived media are "
            "not deleted with their parents",
            {"field": "cascade"},
        )
    held = stores()
    if dry_run:
        preview = jobs.preview_job(held.db, owner=principal.owner, selection=selection)
        body = {
            "success": True,
            "data": {
                "total": preview.total,
                "hd_vectors": preview.hd_vectors,
                "ld_vectors": preview.ld_vectors,
                "sample": preview.sample,
            },
            "metadata": {"dry_run": True},
        }
        return dump(_preview_response, body)
    view, replayed = jobs.create_job(
        held.db,
        owner=principal.owner,
        selection=selection,
        reason=data["reason"],
        cascade=data["cascade"],
        api_key_id=principal.key_id,
        idempotency_key=key,
    )
    return _located(view, replayed)


@bp.route("", methods=["GET"])
@require_scope(Scope.READ, Scope.DELETE)
def list_jobs() -> ResponseReturnValue:
    """List the owner's deletion jobs, newest first."""
    principal = require_principal()
    page = jobs.list_jobs(stores().db, owner=principal.owner, limit=_limit(), cursor=_cursor())
    body = {
        "success": True,
        "data": {
            "items": [job_data(view) for view in page.items],
            "has_more": page.has_more,
            "next_cursor": page.next_cursor,
        },
    }
    return dump(_list_response, body)


@bp.route("/<job_id>", methods=["GET"])
@require_scope(Scope.READ, Scope.DELETE)
def get(job_id: str) -> ResponseReturnValue:
    """Return one of the owner's deletion jobs with its progress."""
    principal = require_principal()
    view = jobs.get_job(stores().db, owner=principal.owner, job_id=_job_id(job_id))
    return dump(_job_response, {"success": True, "data": job_data(view)})


@bp.route("/<job_id>/items", methods=["GET"])
@require_scope(Scope.READ, Scope.DELETE)
def items(job_id: str) -> ResponseReturnValue:
    """Page through a job's per-item outcomes, in manifest order."""
    principal = require_principal()
    checked = _job_id(job_id)
    status = _one("status")
    if status is not None and status not in ITEM_STATUSES:
        raise InvalidRequest(
            f"Query parameter status must be one of {', '.join(ITEM_STATUSES)}",
            {"parameter": "status", "received": status[:64]},
        )
    page = jobs.list_items(
        stores().db,
        owner=principal.owner,
        job_id=checked,
        status=status,
        limit=_limit(),
        cursor=_cursor(),
    )
    body = {
        "success": True,
        "data": {
            "items": [_item_data(item) for item in page.items],
            "has_more": page.has_more,
            "next_cursor": page.next_cursor,
        },
    }
    return dump(_items_response, body)


@bp.route("/<job_id>/cancel", methods=["POST"])
@require_scope(Scope.DELETE)
def cancel(job_id: str) -> ResponseReturnValue:
    """Cancel a job between two chunks; what was deleted stays deleted."""
    principal = require_principal()
    view = jobs.cancel_job(stores().db, owner=principal.owner, job_id=_job_id(job_id))
    return dump(_job_response, {"success": True, "data": job_data(view)})
