"""WicksonClient's deletion-job calls against a scripted fake server (MockTransport).

Sleeps are recorded, not slept: every poll interval and retry wait is asserted exactly.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from tests.unit.fakes import FakeJobServer, envelope, job_data, success
from wickson_batch.client import (
    ApiError,
    DeletionJob,
    JobPreview,
    JobProgress,
    JobWaitTimeout,
    ProtocolError,
    RetriesExhausted,
    WicksonClient,
)

SELECTION: list[Any] = [{"filter": {"metadata": {"campaign": "summer"}}, "exclude": ["vec-1"]}]


@pytest.fixture
def server() -> FakeJobServer:
    return FakeJobServer()


@pytest.fixture
def sleeps() -> list[float]:
    return []


def make_client(server: FakeJobServer, sleeps: list[float], **options: Any) -> WicksonClient:
    options.setdefault("random_fraction", lambda: 0.5)
    return WicksonClient(
        "http://wickson.test",
        "secret-key",
        transport=httpx.MockTransport(server),
        sleep=sleeps.append,
        **options,
    )


def test_start_posts_the_selection_with_a_key_and_returns_the_queued_job(
    server: FakeJobServer, sleeps: list[float]
) -> None:
    job = make_client(server, sleeps).start_deletion_job(SELECTION, reason="campaign ended")

    (request,) = server.requests
    assert (request.method, request.url.path) == ("POST", "/v1/deletion-jobs")
    assert request.headers["X-Api-Key"] == "secret-key"
    assert json.loads(request.content) == {
        "selection": SELECTION,
        "cascade": False,
        "reason": "campaign ended",
    }
    assert len(request.headers["Idempotency-Key"]) == 36  # a UUID
    assert job == DeletionJob(
        job_id="job_1",
        status="queued",
        reason="campaign ended",
        cascade=False,
        created_at=datetime(2026, 3, 9, 12, 34, 56, tzinfo=UTC),
        updated_at=datetime(2026, 3, 9, 12, 35, 0, tzinfo=UTC),
        finished_at=None,
        progress=JobProgress(
            total=None, remaining=None, deleted=0, failed=0, hd_vectors=0, ld_vectors=0
        ),
    )
    assert not job.finished


def test_every_start_gets_its_own_key_and_a_given_key_is_used(
    server: FakeJobServer, sleeps: list[float]
) -> None:
    client = make_client(server, sleeps)
    client.start_deletion_job(["vec-1"])
    client.start_deletion_job(["vec-1"])
    client.start_deletion_job(["vec-1"], idempotency_key="my-key-1")

    keys = server.keys()
    assert keys[0] != keys[1]
    assert keys[2] == "my-key-1"
    assert "reason" not in server.bodies()[0]  # left out, not sent as null


def test_a_start_retried_after_5xx_and_network_errors_keeps_its_key_and_body(
    server: FakeJobServer, sleeps: list[float]
) -> None:
    request = httpx.Request("POST", "http://wickson.test/v1/deletion-jobs")
    server.script = [
        envelope(503, "SERVICE_UNAVAILABLE", "The database is unavailable"),
        httpx.ConnectError("Connection refused", request=request),
    ]

    job = make_client(server, sleeps, backoff_base=1.0).start_deletion_job(SELECTION, cascade=True)

    assert len(server.requests) == 3
    assert len(set(server.keys())) == 1
    assert server.bodies()[0] == server.bodies()[2]
    assert server.bodies()[0]["cascade"] is True
    assert sleeps == [0.5, 1.0]  # full jitter at the injected fraction 0.5: 1 s, 2 s ceilings
    assert job.job_id == "job_1"
    assert list(server.started.values()) == ["job_1"]


def test_a_start_whose_answer_was_lost_is_replayed_not_started_twice(
    server: FakeJobServer, sleeps: list[float]
) -> None:
    server.lose_answers = 1

    job = make_client(server, sleeps).start_deletion_job(SELECTION)

    assert list(server.started.values()) == ["job_1"]  # one job, though two POSTs arrived
    assert job.job_id == "job_1"
    assert job.replayed
    assert len(sleeps) == 1


def test_a_start_waits_out_the_rate_limit_with_the_same_key(
    server: FakeJobServer, sleeps: list[float]
) -> None:
    limited = envelope(429, "RATE_LIMIT_EXCEEDED", "Rate limit exceeded: 5 per 1 minute")
    limited.headers["Retry-After"] = "12"
    server.script = [limited]

    make_client(server, sleeps, max_retries=0).start_deletion_job(SELECTION)

    assert sleeps == [12.0]
    assert server.keys()[0] == server.keys()[1]


def test_a_start_in_use_is_polled_until_the_first_answer_is_replayed(
    server: FakeJobServer, sleeps: list[float]
) -> None:
    in_use = envelope(409, "IDEMPOTENCY_KEY_IN_USE", "A request with this key is at work")
    in_use.headers["Retry-After"] = "1"
    server.script = [in_use, in_use]

    job = make_client(server, sleeps).start_deletion_job(SELECTION)

    assert sleeps == [1.0, 1.0]
    assert job.job_id == "job_1"


def test_a_refused_selection_raises_at_once(server: FakeJobServer, sleeps: list[float]) -> None:
    server.script = [
        envelope(400, "INVALID_SELECTION", "an empty filter selects all your media", index=0)
    ]

    with pytest.raises(ApiError) as raised:
        make_client(server, sleeps).start_deletion_job([{"filter": {}}])

    assert (raised.value.status, raised.value.code) == (400, "INVALID_SELECTION")
    assert raised.value.details["index"] == 0
    assert raised.value.request_id == "req_1"
    assert len(server.requests) == 1 and sleeps == []


def test_a_dry_run_sends_no_key_and_returns_the_preview(
    server: FakeJobServer, sleeps: list[float]
) -> None:
    preview = make_client(server, sleeps).start_deletion_job(SELECTION, dry_run=True)

    (request,) = server.requests
    assert request.url.params["dry_run"] == "true"
    assert "Idempotency-Key" not in request.headers
    assert preview == JobPreview(total=3, hd_vectors=6, ld_vectors=3, sample=("vec-1", "vec-2"))
    assert server.started == {}


def test_a_selection_must_be_a_list(server: FakeJobServer, sleeps: list[float]) -> None:
    client = make_client(server, sleeps)
    with pytest.raises(TypeError, match=r"wrap a single id or object in \[\.\.\.\]"):
        client.start_deletion_job("vec-1")
    with pytest.raises(TypeError):
        client.start_deletion_job({"all": True})  # type: ignore[call-overload]
    assert server.requests == []


def test_get_parses_a_running_job_and_quotes_its_id(
    server: FakeJobServer, sleeps: list[float]
) -> None:
    server.timeline["job/../x"] = [job_data("job_7", "processing", total=10, deleted=4, failed=1)]

    job = make_client(server, sleeps).get_deletion_job("job/../x")

    assert server.requests[0].url.raw_path == b"/v1/deletion-jobs/job%2F%2E%2E%2Fx"
    assert job.progress == JobProgress(
        total=10, remaining=5, deleted=4, failed=1, hd_vectors=8, ld_vectors=4
    )
    assert job.progress.done == 5


@pytest.mark.parametrize("job_id", ["..", "."])
def test_a_dot_id_names_no_other_route(
    server: FakeJobServer, sleeps: list[float], job_id: str
) -> None:
    with pytest.raises(ApiError) as raised:
        make_client(server, sleeps).get_deletion_job(job_id)

    assert raised.value.code == "JOB_NOT_FOUND"
    assert server.requests[0].url.raw_path == b"/v1/deletion-jobs/" + b"%2E" * len(job_id)


def test_an_unknown_job_is_an_api_error(server: FakeJobServer, sleeps: list[float]) -> None:
    with pytest.raises(ApiError) as raised:
        make_client(server, sleeps).get_deletion_job("job_missing")

    assert (raised.value.status, raised.value.code) == (404, "JOB_NOT_FOUND")


def test_a_rejected_job_carries_its_error(server: FakeJobServer, sleeps: list[float]) -> None:
    error = {"code": "JOB_TOO_LARGE", "message": "the selection holds 12 media, at most 10"}
    server.timeline["job_1"] = [
        job_data(status="rejected", error=error, finished_at="2026-03-09T12:36:00Z")
    ]

    job = make_client(server, sleeps).get_deletion_job("job_1")

    assert job.finished
    assert job.error is not None
    assert (job.error.code, job.error.message) == ("JOB_TOO_LARGE", error["message"])
    assert job.finished_at == datetime(2026, 3, 9, 12, 36, tzinfo=UTC)


@pytest.mark.parametrize(
    "broken",
    [
        {"job_id": "job_1"},
        {**job_data(), "progress": {**job_data()["progress"], "deleted": "3"}},
        {**job_data(), "progress": {**job_data()["progress"], "failed": True}},
        {**job_data(), "created_at": "yesterday"},
    ],
)
def test_an_answer_that_is_not_a_job_is_a_protocol_error(
    server: FakeJobServer, sleeps: list[float], broken: dict[str, Any]
) -> None:
    server.script = [success(broken)]

    with pytest.raises(ProtocolError, match="unexpected answer for a job"):
        make_client(server, sleeps).get_deletion_job("job_1")


def test_jobs_are_listed_across_pages_in_the_servers_order(
    server: FakeJobServer, sleeps: list[float]
) -> None:
    server.listed = [job_data(f"job_{n}") for n in (5, 4, 3, 2, 1)]

    jobs = list(make_client(server, sleeps).list_deletion_jobs())

    assert [j.job_id for j in jobs] == ["job_5", "job_4", "job_3", "job_2", "job_1"]
    assert [r.url.params.get("cursor") for r in server.requests] == [None, "2", "4"]


def test_a_page_size_is_sent_as_the_limit(server: FakeJobServer, sleeps: list[float]) -> None:
    server.listed = [job_data(f"job_{n}") for n in range(5)]

    assert len(list(make_client(server, sleeps).list_deletion_jobs(page_size=100))) == 5

    (request,) = server.requests
    assert request.url.params["limit"] == "100"


def test_items_are_paged_and_filtered_by_status(server: FakeJobServer, sleeps: list[float]) -> None:
    server.timeline["job_1"] = [job_data(status="done")]
    server.items["job_1"] = [
        {"media_id": "vec-1", "status": "deleted", "operation_id": "op_1"},
        {"media_id": "vec-2", "status": "failed", "reason": "NOT_FOUND", "operation_id": "op_1"},
        {"media_id": "vec-3", "status": "deleted", "operation_id": "op_2"},
        {"media_id": "vec-4", "status": "failed", "reason": "LEGAL_HOLD", "operation_id": "op_2"},
        {"media_id": "vec-5", "status": "failed", "reason": "NOT_FOUND", "operation_id": "op_2"},
    ]
    client = make_client(server, sleeps)

    failed = list(client.job_items("job_1", status="failed"))
    every = list(client.job_items("job_1"))

    assert [(i.media_id, i.reason) for i in failed] == [
        ("vec-2", "NOT_FOUND"),
        ("vec-4", "LEGAL_HOLD"),
        ("vec-5", "NOT_FOUND"),
    ]
    assert [i.media_id for i in every] == ["vec-1", "vec-2", "vec-3", "vec-4", "vec-5"]
    assert every[0].reason is None and every[0].operation_id == "op_1"
    assert [r.url.params.get("status") for r in server.requests] == [
        "failed",
        "failed",
        None,
        None,
        None,
    ]
    assert server.requests[0].url.path == "/v1/deletion-jobs/job_1/items"


def test_an_unknown_item_status_is_refused_before_sending(
    server: FakeJobServer, sleeps: list[float]
) -> None:
    with pytest.raises(ValueError, match="status must be one of deleted, failed"):
        next(make_client(server, sleeps).job_items("job_1", status="gone"))
    assert server.requests == []


@pytest.mark.parametrize("cursor", [None, "0"])
def test_a_page_with_more_but_no_new_cursor_is_a_protocol_error(
    server: FakeJobServer, sleeps: list[float], cursor: str | None
) -> None:
    page = {"items": [job_data()], "has_more": True, "next_cursor": cursor}
    server.script = (
        [success({**page, "next_cursor": "0"}), success(page)] if cursor else [success(page)]
    )

    with pytest.raises(ProtocolError, match="has more but gives no new cursor"):
        list(make_client(server, sleeps).list_deletion_jobs())


def test_a_page_retried_after_a_5xx_is_the_same_page(
    server: FakeJobServer, sleeps: list[float]
) -> None:
    server.listed = [job_data(f"job_{n}") for n in range(3)]
    server.script = [None, envelope(502, "HTTP_502", "Bad Gateway")]

    jobs = list(make_client(server, sleeps).list_deletion_jobs())

    assert [j.job_id for j in jobs] == ["job_0", "job_1", "job_2"]
    assert [r.url.params.get("cursor") for r in server.requests] == [None, "2", "2"]


def test_wait_polls_until_the_job_ends_and_reports_every_poll(
    server: FakeJobServer, sleeps: list[float]
) -> None:
    server.timeline["job_1"] = [
        job_data(),
        job_data(status="processing", total=1000),
        job_data(status="processing", total=1000, deleted=500),
        job_data(
            status="done", total=1000, deleted=998, failed=2, finished_at="2026-03-09T12:40:00Z"
        ),
    ]
    seen: list[tuple[str, int]] = []

    job = make_client(server, sleeps).wait_for_job(
        "job_1", on_progress=lambda j: seen.append((j.status, j.progress.done)), poll_interval=2.5
    )

    assert seen == [("queued", 0), ("processing", 0), ("processing", 500), ("done", 1000)]
    assert sleeps == [2.5, 2.5, 2.5]
    assert job.finished and job.progress.failed == 2


def test_wait_returns_at_once_for_a_finished_job(
    server: FakeJobServer, sleeps: list[float]
) -> None:
    server.timeline["job_1"] = [job_data(status="cancelled", total=10, deleted=3)]

    job = make_client(server, sleeps).wait_for_job("job_1")

    assert job.status == "cancelled" and sleeps == [] and len(server.requests) == 1


def test_wait_rides_out_rate_limits_between_polls(
    server: FakeJobServer, sleeps: list[float]
) -> None:
    limited = envelope(429, "RATE_LIMIT_EXCEEDED", "Rate limit exceeded")
    limited.headers["Retry-After"] = "30"
    server.timeline["job_1"] = [
        job_data(status="processing", total=2),
        job_data(status="done", total=2, deleted=2),
    ]
    server.script = [None, limited]

    job = make_client(server, sleeps).wait_for_job("job_1", poll_interval=1.0)

    assert job.status == "done"
    assert sleeps == [1.0, 30.0]


def test_wait_gives_up_after_its_timeout_with_the_job_as_last_seen(
    server: FakeJobServer, sleeps: list[float]
) -> None:
    now = [0.0]
    server.timeline["job_1"] = [job_data(status="processing", total=9, deleted=1)]

    def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        now[0] += seconds

    client = make_client(server, [], clock=lambda: now[0])
    client._sleep = sleep
    with pytest.raises(JobWaitTimeout) as raised:
        client.wait_for_job("job_1", poll_interval=2.0, timeout=5.0)

    assert sleeps == [2.0, 2.0]  # a third sleep would end past the 5 s
    assert raised.value.job.progress.deleted == 1
    assert str(raised.value) == "job job_1 is still processing after 5 s"


def test_a_failing_poll_gives_up_after_its_retries(
    server: FakeJobServer, sleeps: list[float]
) -> None:
    server.timeline["job_1"] = [job_data()]
    server.script = [envelope(503, "SERVICE_UNAVAILABLE", "down")] * 3

    with pytest.raises(RetriesExhausted, match="gave up after 3 attempts"):
        make_client(server, sleeps, max_retries=2).wait_for_job("job_1")


def test_cancel_returns_the_job(server: FakeJobServer, sleeps: list[float]) -> None:
    server.timeline["job_1"] = [job_data(status="processing", total=10, deleted=5)]

    job = make_client(server, sleeps).cancel_deletion_job("job_1")

    assert server.requests[0].method == "POST"
    assert server.requests[0].url.path == "/v1/deletion-jobs/job_1/cancel"
    assert (job.status, job.progress.deleted, job.progress.remaining) == ("cancelled", 5, 5)


def test_cancelling_a_finished_job_is_job_finished(
    server: FakeJobServer, sleeps: list[float]
) -> None:
    server.timeline["job_1"] = [job_data(status="done", total=3, deleted=3)]

    with pytest.raises(ApiError) as raised:
        make_client(server, sleeps).cancel_deletion_job("job_1")

    assert (raised.value.status, raised.value.code) == (409, "JOB_FINISHED")


def test_a_cancel_whose_answer_was_lost_returns_the_job_it_cancelled(
    server: FakeJobServer, sleeps: list[float]
) -> None:
    server.timeline["job_1"] = [job_data(status="processing", total=10, deleted=5)]
    server.lose_answers = 1  # the cancel lands; the retry then finds the job finished: 409

    job = make_client(server, sleeps).cancel_deletion_job("job_1")

    assert [r.method for r in server.requests] == ["POST", "POST", "GET"]
    assert job.status == "cancelled"
