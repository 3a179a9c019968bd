"""Fakes and helpers shared by the unit tests of the services and of the client."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import unquote

import httpx

from wickson_batch.db import Database
from wickson_batch.models import Media, MediaState
from wickson_batch.vectors.base import (
    DeletedPoints,
    Hit,
    Space,
    StoredPoint,
    VectorPoint,
    VectorStoreError,
    point_ids_for,
)

NOW = datetime(2026, 3, 9, 12, 34, 56, tzinfo=UTC)


class FakeVectors:
    """Records every call; holds point ids per space; can fail deletes in chosen spaces."""

    def __init__(self) -> None:
        self.dims: dict[Space, int] = {"hd": 2, "ld": 2}
        self.points: dict[Space, set[uuid.UUID]] = {"hd": set(), "ld": set()}
        self.media_of: dict[uuid.UUID, str] = {}
        self.deletes: list[tuple[Space, list[uuid.UUID]]] = []
        self.fail_spaces: set[Space] = set()

    def ensure(self) -> None: ...

    def upsert(self, space: Space, points: Sequence[VectorPoint]) -> None:
        self.points[space].update(p.id for p in points)
        self.media_of.update((p.id, p.media_id) for p in points)

    def delete(self, space: Space, point_ids: Sequence[uuid.UUID]) -> None:
        self.deletes.append((space, list(point_ids)))
        if space in self.fail_spaces:
            raise VectorStoreError("down")
        self.points[space].difference_update(point_ids)

    def count(self, space: Space, media_id: str | None = None) -> int:
        if media_id is None:
            return len(self.points[space])
        return sum(1 for p in self.points[space] if self.media_of.get(p) == media_id)

    def search(self, space: Space, vector: Sequence[float], owner: str, limit: int) -> list[Hit]:
        return []

    def scan(self, space: Space, batch_size: int = 1000) -> Iterator[list[StoredPoint]]:
        stored = [StoredPoint(p, self.media_of.get(p, "")) for p in sorted(self.points[space])]
        for start in range(0, len(stored), batch_size):
            yield stored[start : start + batch_size]

    def ping(self) -> None: ...

    def deleted_points(self, space: Space) -> DeletedPoints | None:
        return None

    def optimize(self, space: Space) -> bool:
        return False

    def disk_bytes(self) -> int | None:
        return None

    def flush(self) -> None: ...

    def close(self) -> None: ...


def add_media(
    db: Database, vectors: FakeVectors, media_id: str, owner: str, hd: int, ld: int
) -> None:
    with db.unit_of_work() as uow:
        uow.session.add(
            Media(
                id=media_id,
                owner=owner,
                state=MediaState.LIVE,
                hd_count=hd,
                ld_count=ld,
                created_at=NOW,
            )
        )
        uow.commit()
    counts: dict[Space, int] = {"hd": hd, "ld": ld}
    for space, count in counts.items():
        ids = point_ids_for(media_id, space, count)
        vectors.points[space].update(ids)
        vectors.media_of.update((i, media_id) for i in ids)


# ---------------------------------------------------------------- the client's server


def envelope(status: int, code: str, message: str, **details: Any) -> httpx.Response:
    body = {
        "success": False,
        "message": message,
        "error": {"code": code, "details": {"request_id": "req_1", **details}},
    }
    return httpx.Response(status, json=body)


@dataclass
class FakeServer:
    """Answers batches like the real one: ids in `live` are deleted (2 hd + 1 ld points each).

    `script` holds replies for the next requests, in order; a None reply (or an empty
    script) means "answer normally". A key seen before replays its first answer.
    """

    live: set[str] = field(default_factory=set)
    script: list[httpx.Response | Exception | None] = field(default_factory=list)
    requests: list[httpx.Request] = field(default_factory=list)
    answers: dict[str, dict[str, Any]] = field(default_factory=dict)

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        scripted = self.script.pop(0) if self.script else None
        if isinstance(scripted, Exception):
            raise scripted
        if scripted is not None:
            return scripted
        key = request.headers["Idempotency-Key"]
        if key in self.answers:
            return httpx.Response(
                200, json=self.answers[key], headers={"Idempotent-Replayed": "true"}
            )
        ids = json.loads(request.content)["media_ids"]
        deleted = [i for i in ids if i in self.live]
        self.live -= set(deleted)
        failed = {i: "NOT_FOUND" for i in ids if i not in deleted}
        body = {
            "success": True,
            "message": f"Batch deletion completed: {len(deleted)} deleted, {len(failed)} failed",
            "data": {
                "deleted": {
                    "count": len(deleted),
                    "media_ids": deleted,
                    "hd_vectors": 2 * len(deleted),
                    "ld_vectors": len(deleted),
                },
                "failed": {"count": len(failed), "media_ids": list(failed), "reasons": failed},
            },
            "metadata": {"operation_id": f"batch_delete_{len(self.answers) + 1}"},
        }
        self.answers[key] = body
        return httpx.Response(200, json=body)

    def bodies(self) -> list[dict[str, Any]]:
        return [json.loads(r.content) for r in self.requests]

    def keys(self) -> list[str]:
        return [r.headers["Idempotency-Key"] for r in self.requests]


def job_data(
    job_id: str = "job_1",
    status: str = "queued",
    *,
    total: int | None = None,
    deleted: int = 0,
    failed: int = 0,
    reason: str | None = "campaign ended",
    finished_at: str | None = None,
    error: dict[str, str] | None = None,
) -> dict[str, Any]:
    """A job as the server's `data` has it; `remaining` follows from the counts."""
    data: dict[str, Any] = {
        "job_id": job_id,
        "status": status,
        "reason": reason,
        "cascade": False,
        "created_at": "2026-03-09T12:34:56Z",
        "updated_at": "2026-03-09T12:35:00Z",
        "finished_at": finished_at,
        "progress": {
            "total": total,
            "remaining": None if total is None else total - deleted - failed,
            "deleted": deleted,
            "failed": failed,
            "hd_vectors": 2 * deleted,
            "ld_vectors": deleted,
        },
    }
    if error is not None:
        data["error"] = error
    return data


def success(data: Any, status: int = 200, **headers: str) -> httpx.Response:
    return httpx.Response(status, json={"success": True, "data": data}, headers=headers)


@dataclass
class FakeJobServer:
    """Answers the deletion-job routes like the real one, from scripted job states.

    `timeline[job_id]` holds the states successive GETs of a job return (the last repeats);
    a POST creates `job_1`, `job_2`, ... queued, and a key seen before gets its job again
    (`Idempotent-Replayed: true`). `items[job_id]` and `listed` are paged `page_size` at a
    time, the cursor being the next index. `script` works as FakeServer's does;
    `lose_answers` requests are applied but their answers lost (a ReadTimeout instead).
    """

    timeline: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    items: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    listed: list[dict[str, Any]] = field(default_factory=list)
    page_size: int = 2
    script: list[httpx.Response | BaseException | None] = field(default_factory=list)
    requests: list[httpx.Request] = field(default_factory=list)
    started: dict[str, str] = field(default_factory=dict)  # Idempotency-Key -> job id
    lose_answers: int = 0

    def __call__(self, request: httpx.Request) -> httpx.Response:
        response = self._answer(request)
        if self.lose_answers:
            self.lose_answers -= 1
            raise httpx.ReadTimeout("timed out", request=request)
        return response

    def _answer(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        scripted = self.script.pop(0) if self.script else None
        if isinstance(scripted, BaseException):
            raise scripted
        if scripted is not None:
            return scripted
        path = request.url.raw_path.decode().partition("?")[0]
        parts = [unquote(p) for p in path.removeprefix("/v1/deletion-jobs").strip("/").split("/")]
        if request.method == "POST" and parts == [""]:
            return self._start(request)
        if request.method == "GET" and parts == [""]:
            return self._page(request, self.listed)
        job_id = parts[0]
        if job_id not in self.timeline:
            return envelope(404, "JOB_NOT_FOUND", f"No deletion job {job_id}")
        if request.method == "GET" and parts[1:] == ["items"]:
            wanted = request.url.params.get("status")
            entries = self.items.get(job_id, [])
            return self._page(request, [e for e in entries if wanted in (None, e["status"])])
        if request.method == "POST" and parts[1:] == ["cancel"]:
            current = self.timeline[job_id][0]
            if current["status"] in ("done", "cancelled", "rejected"):
                return envelope(409, "JOB_FINISHED", f"Job {job_id} is {current['status']}")
            self.timeline[job_id] = [{**current, "status": "cancelled"}]
            return success(self.timeline[job_id][0])
        if request.method == "GET" and parts[1:] == []:
            states = self.timeline[job_id]
            return success(states.pop(0) if len(states) > 1 else states[0])
        return envelope(405, "METHOD_NOT_ALLOWED", "no such route here")

    def _start(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        if request.url.params.get("dry_run") == "true":
            preview = {"total": 3, "hd_vectors": 6, "ld_vectors": 3, "sample": ["vec-1", "vec-2"]}
            return httpx.Response(
                200, json={"success": True, "data": preview, "metadata": {"dry_run": True}}
            )
        key = request.headers["Idempotency-Key"]
        if key in self.started:
            job_id = self.started[key]
            return success(self.timeline[job_id][0], 202, **{"Idempotent-Replayed": "true"})
        job_id = f"job_{len(self.started) + 1}"
        self.started[key] = job_id
        self.timeline.setdefault(job_id, [job_data(job_id, reason=body.get("reason"))])
        return success(self.timeline[job_id][0], 202, Location=f"/v1/deletion-jobs/{job_id}")

    def _page(self, request: httpx.Request, entries: list[dict[str, Any]]) -> httpx.Response:
        start = int(request.url.params.get("cursor", "0"))
        size = int(request.url.params.get("limit", str(self.page_size)))
        page = entries[start : start + size]
        more = start + size < len(entries)
        cursor = str(start + size) if more else None
        return success({"items": page, "has_more": more, "next_cursor": cursor})

    def bodies(self) -> list[dict[str, Any]]:
        return [json.loads(r.content) for r in self.requests if r.content]

    def keys(self) -> list[str | None]:
        return [r.headers.get("Idempotency-Key") for r in self.requests]
