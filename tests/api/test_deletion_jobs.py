"""Deletion jobs over HTTP (DESIGN section 9): create, run, read, page, cancel, dry run.

The runner is driven here by `run_jobs` (no background thread in the API tests), so every
answer is read at a known point of the job's life.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
from flask import Flask
from werkzeug.test import TestResponse

from tests.helpers import (
    Caller,
    assert_error,
    body,
    job_runner,
    run_jobs,
    snapshot,
    stores_of,
    unknown_id,
)
from wickson_batch.protocol import Scope
from wickson_batch.services import job_runner as runner_service

JOBS = "/v1/deletion-jobs"
ISO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")


def start(
    caller: Caller,
    selection: Any,
    *,
    key: str | None = None,
    query: str = "",
    **fields: Any,
) -> TestResponse:
    headers = dict(caller.headers)
    if key is not None:
        headers["Idempotency-Key"] = key
    payload = {"selection": selection, **fields}
    return caller.client.post(JOBS + query, json=payload, headers=headers)


def job_of(caller: Caller, job_id: str) -> dict[str, Any]:
    response = caller.client.get(f"{JOBS}/{job_id}", headers=caller.headers)
    assert response.status_code == 200, response.get_json()
    data: dict[str, Any] = body(response)["data"]
    return data


def items_of(caller: Caller, job_id: str, query: str = "") -> TestResponse:
    return caller.client.get(f"{JOBS}/{job_id}/items{query}", headers=caller.headers)


def all_items(caller: Caller, job_id: str, status: str | None = None) -> list[dict[str, Any]]:
    """Page through a job's items, three at a time, to the end."""
    found: list[dict[str, Any]] = []
    cursor: str | None = None
    while True:
        query = "?limit=3" + (f"&status={status}" if status else "")
        if cursor:
            query += f"&cursor={cursor}"
        page = body(items_of(caller, job_id, query))["data"]
        found.extend(page["items"])
        if not page["has_more"]:
            assert page["next_cursor"] is None
            return found
        cursor = page["next_cursor"]


def progress(**counts: int | None) -> dict[str, int | None]:
    base: dict[str, int | None] = {
        "total": None,
        "remaining": None,
        "deleted": 0,
        "failed": 0,
        "hd_vectors": 0,
        "ld_vectors": 0,
    }
    return {**base, **counts}


def test_a_new_job_is_accepted_queued_with_its_location(alice: Caller) -> None:
    media_id = alice.create()

    response = start(alice, [media_id], reason="campaign ended")

    assert response.status_code == 202
    data = body(response)["data"]
    assert response.headers["Location"] == f"{JOBS}/{data['job_id']}"
    assert re.fullmatch(r"job_[0-9a-f]{32}", data["job_id"])
    assert ISO.match(data["created_at"]) and ISO.match(data["updated_at"])
    assert data == {
        "job_id": data["job_id"],
        "status": "queued",
        "reason": "campaign ended",
        "cascade": False,
        "created_at": data["created_at"],
        "updated_at": data["updated_at"],
        "finished_at": None,
        "progress": progress(),
    }
    assert body(response)["success"] is True
    assert job_of(alice, data["job_id"]) == data
    assert alice.get(media_id).status_code == 200  # nothing runs until a runner takes it


def test_a_job_deletes_its_selection_and_reports_every_id_once(
    app: Flask, alice: Caller, bob: Caller
) -> None:
    mine = [alice.create(hd=2, ld=1, seed=n) for n in range(7)]
    kept = alice.create(seed=50)
    theirs = bob.create(seed=60)
    missing = unknown_id()
    selection = [*mine[:3], missing, theirs, *mine[3:]]
    job_id = body(start(alice, selection, reason="gdpr"))["data"]["job_id"]

    assert run_jobs(app, chunk_size=3) == [job_id]

    data = job_of(alice, job_id)
    assert data["status"] == "done"
    assert ISO.match(data["finished_at"])
    assert data["progress"] == progress(
        total=9, remaining=0, deleted=7, failed=2, hd_vectors=14, ld_vectors=7
    )
    items = all_items(alice, job_id)
    assert [item["media_id"] for item in items] == selection  # manifest order, each once
    for item in items:
        if item["media_id"] in (missing, theirs):
            assert (item["status"], item["reason"]) == ("failed", "NOT_FOUND")
        else:
            assert item["status"] == "deleted" and "reason" not in item
    assert all(alice.get(m).status_code == 404 for m in mine)
    assert alice.get(kept).status_code == 200
    assert bob.get(theirs).status_code == 200  # another owner's media is never touched
    assert stores_of(app).vectors.count("hd") == 2  # kept's and theirs'


def test_each_chunk_is_an_operation_the_owner_can_look_up(app: Flask, alice: Caller) -> None:
    mine = [alice.create(seed=n) for n in range(5)]
    job_id = body(start(alice, mine, reason="chunks"))["data"]["job_id"]
    run_jobs(app, chunk_size=2)

    operations = [item["operation_id"] for item in all_items(alice, job_id)]

    assert len(set(operations)) == 3  # 2 + 2 + 1
    first = alice.client.get(f"/v1/operations/{operations[0]}", headers=alice.headers)
    assert first.status_code == 200
    looked_up = body(first)
    assert looked_up["data"]["deleted"]["media_ids"] == mine[:2]
    assert looked_up["metadata"]["reason"] == "chunks"
    assert looked_up["metadata"]["status"] == "completed"


def test_progress_adds_up_between_chunks(app: Flask, alice: Caller) -> None:
    mine = [alice.create(seed=n) for n in range(5)]
    job_id = body(start(alice, [*mine, unknown_id()]))["data"]["job_id"]
    runner = job_runner(app, chunk_size=2)
    jr = runner_service  # one chunk at a time, read between them
    held = stores_of(app)
    assert jr.claim_next_job(held.db, runner.holder, 30) == job_id
    jr.resolve_manifest(held.db, job_id, runner.holder, max_media=100)
    seen = [job_of(alice, job_id)["progress"]]
    while jr.run_chunk(held.db, held.vectors, job_id, runner.holder, chunk_size=2):
        seen.append(job_of(alice, job_id)["progress"])

    assert [p["remaining"] for p in seen] == [6, 4, 2, 0]
    for counts in seen:
        assert counts["deleted"] + counts["failed"] + counts["remaining"] == counts["total"] == 6
    assert job_of(alice, job_id)["status"] == "processing"  # until the runner ends it


def test_another_owners_job_is_not_found_on_every_route(
    app: Flask, alice: Caller, bob: Caller
) -> None:
    job_id = body(start(alice, [alice.create()]))["data"]["job_id"]
    missing = "job_" + "0" * 32
    for target in (job_id, missing):
        for method, path in (
            ("GET", f"{JOBS}/{target}"),
            ("GET", f"{JOBS}/{target}/items"),
            ("POST", f"{JOBS}/{target}/cancel"),
        ):
            response = bob.client.open(path, method=method, headers=bob.headers)
            details = assert_error(
                response, 404, "JOB_NOT_FOUND", f"Deletion job {target} not found"
            )
            assert details == {}
    listing = body(bob.client.get(JOBS, headers=bob.headers))["data"]
    assert listing == {"items": [], "has_more": False, "next_cursor": None}
    assert job_of(alice, job_id)["status"] == "queued"  # bob's cancel changed nothing


@pytest.mark.parametrize("bad", ["nope", "job_XYZ", "job_" + "a" * 33, "JOB_" + "0" * 32])
def test_a_malformed_job_id_is_not_found(alice: Caller, bad: str) -> None:
    response = alice.client.get(f"{JOBS}/{bad}", headers=alice.headers)
    assert_error(response, 404, "JOB_NOT_FOUND")


def test_the_listing_pages_newest_first_each_job_once(alice: Caller, bob: Caller) -> None:
    made = [body(start(alice, [unknown_id()]))["data"]["job_id"] for _ in range(5)]
    start(bob, [unknown_id()])
    seen: list[str] = []
    cursor: str | None = None
    while True:
        query = "?limit=2" + (f"&cursor={cursor}" if cursor else "")
        page = body(alice.client.get(JOBS + query, headers=alice.headers))["data"]
        assert len(page["items"]) <= 2
        seen.extend(job["job_id"] for job in page["items"])
        if not page["has_more"]:
            break
        cursor = page["next_cursor"]

    assert sorted(seen) == sorted(made) and len(seen) == 5
    assert seen == made[::-1]  # newest first


def test_items_filter_by_outcome(app: Flask, alice: Caller) -> None:
    mine = [alice.create(seed=n) for n in range(4)]
    missing = [unknown_id() for _ in range(4)]
    selection = [m for pair in zip(mine, missing, strict=True) for m in pair]
    job_id = body(start(alice, selection))["data"]["job_id"]
    run_jobs(app, chunk_size=3)

    deleted = all_items(alice, job_id, "deleted")
    failed = all_items(alice, job_id, "failed")

    assert [item["media_id"] for item in deleted] == mine
    assert [item["media_id"] for item in failed] == missing
    assert {item["reason"] for item in failed} == {"NOT_FOUND"}


@pytest.mark.parametrize(
    ("query", "parameter"),
    [
        ("?status=pending", "status"),
        ("?status=deleted&status=failed", "status"),
        ("?limit=0", "limit"),
        ("?limit=101", "limit"),
        ("?limit=ten", "limit"),
        ("?cursor=garbage", "cursor"),
        ("?cursor=", "cursor"),
        ("?cursor=WyJqb2JzIiwxXQ", "cursor"),  # another listing's cursor
    ],
)
def test_bad_paging_parameters_are_refused(alice: Caller, query: str, parameter: str) -> None:
    job_id = body(start(alice, [unknown_id()]))["data"]["job_id"]

    details = assert_error(items_of(alice, job_id, query), 400, "INVALID_REQUEST")

    # A cursor is named as the media listing names it (`field`), the others as query flags.
    assert details.get("parameter", details.get("field")) == parameter


def test_the_job_listing_refuses_a_foreign_cursor(alice: Caller) -> None:
    response = alice.client.get(JOBS + "?cursor=WyJpdGVtcyIsMTld", headers=alice.headers)
    assert assert_error(response, 400, "INVALID_REQUEST")["field"] == "cursor"


def test_cancelling_a_queued_job_stops_it_before_anything_is_deleted(
    app: Flask, alice: Caller
) -> None:
    media_id = alice.create()
    job_id = body(start(alice, [media_id]))["data"]["job_id"]

    response = alice.client.post(f"{JOBS}/{job_id}/cancel", headers=alice.headers)

    assert response.status_code == 200
    data = body(response)["data"]
    assert data["status"] == "cancelled" and ISO.match(data["finished_at"])
    assert data["progress"] == progress()
    assert run_jobs(app) == []
    assert alice.get(media_id).status_code == 200


def test_cancelling_a_finished_job_is_a_conflict(app: Flask, alice: Caller) -> None:
    job_id = body(start(alice, [alice.create()]))["data"]["job_id"]
    run_jobs(app)
    before = snapshot(app)

    response = alice.client.post(f"{JOBS}/{job_id}/cancel", headers=alice.headers)

    details = assert_error(response, 409, "JOB_FINISHED")
    assert details == {"status": "done"}
    assert "Retry-After" not in response.headers  # a retry cannot succeed
    assert snapshot(app) == before
    again = alice.client.post(f"{JOBS}/{job_id}/cancel", headers=alice.headers)
    assert again.status_code == 409


def test_a_dry_run_reports_and_stores_nothing(app: Flask, alice: Caller, bob: Caller) -> None:
    mine = [alice.create(hd=3, ld=2, seed=n) for n in range(25)]
    theirs = bob.create()
    before = snapshot(app)

    response = start(alice, [*mine[:2], theirs, unknown_id(), *mine[2:]][:100], query="?dry_run=1")

    assert response.status_code == 200
    assert "Location" not in response.headers
    assert body(response) == {
        "success": True,
        "data": {"total": 25, "hd_vectors": 75, "ld_vectors": 50, "sample": mine[:20]},
        "metadata": {"dry_run": True},
    }
    assert snapshot(app) == before


def test_the_same_idempotency_key_answers_the_same_job(app: Flask, alice: Caller) -> None:
    media_id = alice.create()
    first = start(alice, [media_id], key="job-1", reason="r")
    before = snapshot(app)

    again = start(alice, [media_id], key="job-1", reason="r")

    assert again.status_code == 202
    assert body(again) == body(first)
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.headers["Location"] == first.headers["Location"]
    assert "Idempotent-Replayed" not in first.headers
    assert snapshot(app) == before


def test_a_replay_shows_the_job_as_it_is_now(app: Flask, alice: Caller) -> None:
    media_id = alice.create()
    first = body(start(alice, [media_id], key="job-2"))["data"]
    run_jobs(app)

    again = body(start(alice, [media_id], key="job-2"))["data"]

    assert again["job_id"] == first["job_id"] and again["status"] == "done"


@pytest.mark.parametrize(
    "other",
    [{"reason": "another"}, {"cascade": False, "reason": "r2"}],
    ids=["reason", "body"],
)
def test_the_same_key_with_another_request_is_refused(
    app: Flask, alice: Caller, other: dict[str, Any]
) -> None:
    media_id = alice.create()
    start(alice, [media_id], key="job-3", reason="r")
    before = snapshot(app)

    response = start(alice, [media_id], key="job-3", **other)

    assert_error(response, 422, "IDEMPOTENCY_KEY_REUSED")
    assert snapshot(app) == before


def test_a_batchs_key_is_not_reused_for_a_job(app: Flask, alice: Caller) -> None:
    media_id = alice.create()
    headers = {**alice.headers, "Idempotency-Key": "shared"}
    alice.client.delete("/v1/media/batch", json={"media_ids": [media_id]}, headers=headers)
    before = snapshot(app)

    assert_error(start(alice, [media_id], key="shared"), 422, "IDEMPOTENCY_KEY_REUSED")
    replay = alice.client.delete("/v1/media/batch", json={"media_ids": [media_id]}, headers=headers)
    assert replay.headers["Idempotent-Replayed"] == "true"
    assert snapshot(app) == before


def test_a_jobs_key_is_not_reused_for_a_batch(app: Flask, alice: Caller) -> None:
    media_id = alice.create()
    start(alice, [media_id], key="shared-2")
    before = snapshot(app)
    headers = {**alice.headers, "Idempotency-Key": "shared-2"}

    response = alice.client.delete(
        "/v1/media/batch", json={"media_ids": [media_id]}, headers=headers
    )

    assert_error(response, 422, "IDEMPOTENCY_KEY_REUSED")
    assert snapshot(app) == before


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({}, "selection"),
        ({"selection": ["vec-1"], "x": 1}, "x"),
        ({"selection": ["vec-1"], "cascade": True}, "cascade"),
        ({"selection": ["vec-1"], "cascade": "yes"}, "cascade"),
        ({"selection": ["vec-1"], "reason": "a" * 501}, "reason"),
        ({"selection": ["vec-1"], "reason": 5}, "reason"),
    ],
)
def test_a_bad_job_request_is_refused_and_changes_nothing(
    app: Flask, alice: Caller, payload: dict[str, Any], field: str
) -> None:
    before = snapshot(app)

    response = alice.client.post(JOBS, json=payload, headers=alice.headers)

    assert assert_error(response, 400, "INVALID_REQUEST")["field"] == field
    assert snapshot(app) == before


def test_a_job_request_must_be_json(alice: Caller) -> None:
    response = alice.client.post(JOBS, data="selection=all", headers=alice.headers)
    assert_error(response, 415, "UNSUPPORTED_MEDIA_TYPE")


@pytest.mark.parametrize(
    ("scopes", "allowed"),
    [
        ([Scope.READ], {"list", "get", "items"}),
        ([Scope.DELETE], {"create", "list", "get", "items", "cancel"}),
        ([Scope.WRITE], set()),
    ],
)
def test_scopes(
    app: Flask, alice: Caller, make_key: Any, scopes: list[str], allowed: set[str]
) -> None:
    job_id = body(start(alice, [unknown_id()]))["data"]["job_id"]
    caller = Caller(alice.client, make_key("alice", scopes), app)
    calls = {
        "create": ("POST", JOBS, {"selection": [unknown_id()]}),
        "list": ("GET", JOBS, None),
        "get": ("GET", f"{JOBS}/{job_id}", None),
        "items": ("GET", f"{JOBS}/{job_id}/items", None),
        "cancel": ("POST", f"{JOBS}/{job_id}/cancel", None),
    }
    for name, (method, path, payload) in calls.items():
        response = caller.client.open(path, method=method, json=payload, headers=caller.headers)
        if name in allowed:
            assert response.status_code in (200, 202), (name, response.get_json())
        else:
            assert_error(response, 403, "INSUFFICIENT_PERMISSIONS")


def test_a_job_without_a_key_is_refused(alice: Caller) -> None:
    response = alice.client.post(JOBS, json={"selection": [unknown_id()]})
    assert_error(response, 401, "INVALID_API_KEY")


def test_a_selection_over_the_limit_is_rejected_without_deleting(app: Flask, alice: Caller) -> None:
    mine = [alice.create(seed=n) for n in range(3)]
    job_id = body(start(alice, mine))["data"]["job_id"]

    run_jobs(app, max_media=2)

    data = job_of(alice, job_id)
    assert data["status"] == "rejected" and ISO.match(data["finished_at"])
    assert data["error"]["code"] == "JOB_TOO_LARGE"
    assert "2" in data["error"]["message"]
    assert data["progress"] == progress()
    assert all(alice.get(m).status_code == 200 for m in mine)
    assert body(items_of(alice, job_id))["data"]["items"] == []
    assert_error(
        alice.client.post(f"{JOBS}/{job_id}/cancel", headers=alice.headers), 409, "JOB_FINISHED"
    )


def test_jobs_are_counted_in_the_metrics(app: Flask, alice: Caller) -> None:
    mine = [alice.create(seed=n) for n in range(3)]
    start(alice, [*mine, unknown_id()])
    start(alice, [unknown_id()])
    run_jobs(app, chunk_size=2)
    start(alice, [unknown_id()])

    text = alice.client.get("/metrics").get_data(as_text=True)

    assert "wickson_job_media_deleted_total 3.0" in text
    assert "wickson_job_media_failed_total 2.0" in text
    assert 'wickson_deletion_jobs{status="done"} 2.0' in text
    assert 'wickson_deletion_jobs{status="queued"} 1.0' in text
    assert "wickson_job_chunk_seconds_count 3.0" in text
    assert "wickson_job_throughput_media_per_second 0.0" in text  # idle again


def test_a_job_of_all_my_media_spares_the_excluded_and_everyone_elses(
    app: Flask, alice: Caller, bob: Caller
) -> None:
    mine = [alice.create(seed=n) for n in range(6)]
    theirs = bob.create()
    selection = [{"all": True, "exclude": mine[:2]}]
    job_id = body(start(alice, selection))["data"]["job_id"]

    run_jobs(app, chunk_size=3)

    assert job_of(alice, job_id)["progress"] == progress(
        total=4, remaining=0, deleted=4, hd_vectors=4, ld_vectors=4
    )
    assert [item["media_id"] for item in all_items(alice, job_id)] == mine[2:]  # oldest first
    assert [alice.get(m).status_code for m in mine] == [200, 200, 404, 404, 404, 404]
    assert bob.get(theirs).status_code == 200


def test_named_ids_come_first_and_are_never_listed_twice(app: Flask, alice: Caller) -> None:
    mine = [alice.create(seed=n, metadata={"campaign": "summer"}) for n in range(4)]
    other = alice.create(seed=9, metadata={"campaign": "winter"})
    missing = unknown_id()
    selection = [mine[3], missing, {"filter": {"metadata": {"campaign": "summer"}}}, mine[3]]
    job_id = body(start(alice, selection))["data"]["job_id"]

    run_jobs(app)

    items = all_items(alice, job_id)
    assert [item["media_id"] for item in items] == [mine[3], missing, *mine[:3]]
    assert job_of(alice, job_id)["progress"]["total"] == 5
    assert alice.get(other).status_code == 200


def test_the_manifest_is_fixed_when_the_job_starts(app: Flask, alice: Caller) -> None:
    before = [alice.create(seed=n) for n in range(5)]
    job_id = body(start(alice, [{"all": True}]))["data"]["job_id"]
    runner = job_runner(app, chunk_size=2)
    held = stores_of(app)
    assert runner_service.claim_next_job(held.db, runner.holder, 30) == job_id
    runner_service.resolve_manifest(held.db, job_id, runner.holder, max_media=100)
    created_later = alice.create(seed=99)

    runner.run_job(job_id)

    assert job_of(alice, job_id)["progress"]["deleted"] == 5
    assert all(alice.get(m).status_code == 404 for m in before)
    assert alice.get(created_later).status_code == 200


def test_a_dry_run_of_a_filter_counts_what_it_matches(app: Flask, alice: Caller) -> None:
    summer = [alice.create(hd=2, seed=n, metadata={"campaign": "summer"}) for n in range(3)]
    alice.create(seed=9, metadata={"campaign": "winter"})
    before = snapshot(app)
    selection = [{"filter": {"metadata": {"campaign": "summer"}}, "exclude": summer[:1]}]

    response = start(alice, selection, query="?dry_run=true")

    assert body(response)["data"] == {
        "total": 2,
        "hd_vectors": 4,
        "ld_vectors": 2,
        "sample": summer[1:],
    }
    assert snapshot(app) == before


@pytest.mark.parametrize(
    ("selection", "field"),
    [
        ([], "selection"),
        ("all", "selection"),
        ([{"filter": {}}], "selection[0].filter"),
        ([{"all": False}], "selection[0].all"),
        (["not an id!"], "selection[0]"),
    ],
)
def test_a_bad_selection_is_refused_and_changes_nothing(
    app: Flask, alice: Caller, selection: Any, field: str
) -> None:
    before = snapshot(app)

    for query in ("", "?dry_run=true"):
        details = assert_error(start(alice, selection, query=query), 400, "INVALID_SELECTION")
        assert details["field"] == field
    assert snapshot(app) == before


def test_a_selection_of_all_over_the_limit_is_rejected(app: Flask, alice: Caller) -> None:
    mine = [alice.create(seed=n) for n in range(3)]
    job_id = body(start(alice, [{"all": True}]))["data"]["job_id"]

    run_jobs(app, max_media=2)

    data = job_of(alice, job_id)
    assert (data["status"], data["error"]["code"]) == ("rejected", "JOB_TOO_LARGE")
    assert all(alice.get(m).status_code == 200 for m in mine)
