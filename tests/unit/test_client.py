"""WicksonClient's batching, retries and waits, against a scripted fake server (MockTransport).

The sleep and the jitter are injected, so every wait is asserted exactly and nothing sleeps.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest

from tests.unit.fakes import FakeServer, envelope
from wickson_batch.client import (
    ApiError,
    Batch,
    BatchResult,
    ProtocolError,
    RetriesExhausted,
    WicksonClient,
    parse_retry_after,
)

Reply = Callable[[httpx.Request], httpx.Response | Exception | None]


def rate_limited(retry_after: str) -> httpx.Response:
    response = envelope(429, "RATE_LIMIT_EXCEEDED", "Rate limit exceeded: 3 per 1 minute")
    response.headers["Retry-After"] = retry_after
    return response


def ids(n: int, start: int = 0) -> list[str]:
    return [f"vec-{i:04d}" for i in range(start, start + n)]


@pytest.fixture
def server() -> FakeServer:
    return FakeServer()


@pytest.fixture
def sleeps() -> list[float]:
    return []


def make_client(server: FakeServer, sleeps: list[float], **options: Any) -> WicksonClient:
    options.setdefault("random_fraction", lambda: 0.5)
    return WicksonClient(
        "http://wickson.test",
        "secret-key",
        transport=httpx.MockTransport(server),
        sleep=sleeps.append,
        **options,
    )


def test_ids_are_deduped_in_order_and_split_into_batches_of_100(
    server: FakeServer, sleeps: list[float]
) -> None:
    wanted = ids(250)
    server.live = set(wanted)

    result = make_client(server, sleeps).delete_media(wanted + wanted[:10], reason="cleanup")

    bodies = server.bodies()
    assert [len(b["media_ids"]) for b in bodies] == [100, 100, 50]
    assert [i for b in bodies for i in b["media_ids"]] == wanted
    assert all(b["reason"] == "cleanup" for b in bodies)
    assert len(set(server.keys())) == 3
    assert result.deleted == wanted
    assert result.failed == {}
    assert (result.hd_vectors, result.ld_vectors) == (500, 250)
    assert result.operation_ids == ["batch_delete_1", "batch_delete_2", "batch_delete_3"]
    assert (result.batches, result.retries, result.rate_limit_waits) == (3, 0, 0)
    assert sleeps == []
    assert server.requests[0].headers["X-Api-Key"] == "secret-key"
    assert server.requests[0].method == "DELETE"
    assert server.requests[0].url.path == "/v1/media/batch"


def test_failed_ids_are_merged_with_their_reasons(server: FakeServer, sleeps: list[float]) -> None:
    server.live = set(ids(3))

    result = make_client(server, sleeps).delete_media([*ids(3), "vec-gone", "vec-other"])

    assert result.deleted == ids(3)
    assert result.failed == {"vec-gone": "NOT_FOUND", "vec-other": "NOT_FOUND"}


def test_rate_limit_waits_retry_after_then_resends_the_same_batch(
    server: FakeServer, sleeps: list[float]
) -> None:
    server.live = set(ids(150))
    server.script = [None, rate_limited("7"), rate_limited("2")]

    result = make_client(server, sleeps, max_retries=0).delete_media(ids(150))

    assert sleeps == [7.0, 2.0]
    keys = server.keys()
    assert keys[1] == keys[2] == keys[3] != keys[0]
    assert server.bodies()[1] == server.bodies()[3]
    assert result.deleted == ids(150)
    assert (result.rate_limit_waits, result.retries) == (2, 0)


def test_a_429_without_retry_after_backs_off(server: FakeServer, sleeps: list[float]) -> None:
    server.live = {"vec-1"}
    server.script = [envelope(429, "RATE_LIMIT_EXCEEDED", "slow down")]

    make_client(server, sleeps, backoff_base=2.0).delete_media(["vec-1"])

    assert sleeps == [1.0]  # 0.5 (the injected jitter fraction) x 2 s


def test_too_many_rate_limit_waits_give_up(server: FakeServer, sleeps: list[float]) -> None:
    server.script = [rate_limited("1")] * 4

    with pytest.raises(RetriesExhausted) as raised:
        make_client(server, sleeps, max_rate_limit_waits=3).delete_media(["vec-1"])

    assert len(server.requests) == 4
    assert sleeps == [1.0, 1.0, 1.0]
    assert "RATE_LIMIT_EXCEEDED" in str(raised.value)


def test_5xx_and_network_errors_retry_with_full_jitter_backoff(
    server: FakeServer, sleeps: list[float]
) -> None:
    server.live = {"vec-1"}
    request = httpx.Request("DELETE", "http://wickson.test/v1/media/batch")
    server.script = [
        envelope(503, "SERVICE_UNAVAILABLE", "The database is unavailable"),
        httpx.ConnectError("Connection refused", request=request),
        httpx.ReadTimeout("timed out", request=request),
        httpx.Response(502, text="<html>Bad Gateway</html>"),
        httpx.RemoteProtocolError("Server disconnected", request=request),
    ]
    fractions = iter([1.0, 0.5, 0.25, 1.0, 0.0])

    result = make_client(
        server,
        sleeps,
        backoff_base=1.0,
        backoff_cap=6.0,
        max_retries=5,
        random_fraction=lambda: next(fractions),
    ).delete_media(["vec-1"])

    # Uniform in [0, min(cap, base * 2^(n-1))]: ceilings 1, 2, 4, 6 (capped), 6.
    assert sleeps == [1.0, 1.0, 1.0, 6.0, 0.0]
    assert len(set(server.keys())) == 1
    assert result.deleted == ["vec-1"]
    assert result.retries == 5


def test_retry_after_on_a_503_is_honoured(server: FakeServer, sleeps: list[float]) -> None:
    server.live = {"vec-1"}
    unavailable = envelope(503, "SERVICE_UNAVAILABLE", "down")
    unavailable.headers["Retry-After"] = "4"
    server.script = [unavailable]

    make_client(server, sleeps).delete_media(["vec-1"])

    assert sleeps == [4.0]


def test_a_key_still_in_use_is_retried_later(server: FakeServer, sleeps: list[float]) -> None:
    server.live = {"vec-1"}
    server.script = [envelope(409, "IDEMPOTENCY_KEY_IN_USE", "still being processed")]

    result = make_client(server, sleeps).delete_media(["vec-1"])

    assert len(server.requests) == 2
    assert server.keys()[0] == server.keys()[1]
    assert result.deleted == ["vec-1"]


def test_a_key_in_use_is_polled_past_the_retry_budget_then_given_up(
    server: FakeServer, sleeps: list[float]
) -> None:
    """A server restarted after deciding a batch answers 409 until its grace ends (60 s):
    the client polls every Retry-After (1 s) for up to in_use_timeout, not max_retries."""
    in_use = envelope(409, "IDEMPOTENCY_KEY_IN_USE", "still being processed")
    in_use.headers["Retry-After"] = "1"
    server.live = {"vec-1"}
    server.script = [in_use] * 30

    result = make_client(server, sleeps).delete_media(["vec-1"])

    assert result.deleted == ["vec-1"]
    assert sleeps == [1.0] * 30
    assert len(set(server.keys())) == 1

    server.live = {"vec-2"}
    server.script = [in_use] * 200
    sleeps.clear()
    with pytest.raises(RetriesExhausted) as raised:
        make_client(server, sleeps).delete_media(["vec-2"])

    assert sleeps == [1.0] * 120  # in_use_timeout: 120 s
    assert str(raised.value) == (
        "gave up after 121 attempts: 409 IDEMPOTENCY_KEY_IN_USE: still being processed"
    )
    assert [batch.media_ids for batch in raised.value.remaining] == [("vec-2",)]


def test_a_lost_answer_is_replayed_not_deleted_twice(
    server: FakeServer, sleeps: list[float]
) -> None:
    server.live = set(ids(2))
    first_answer_lost: list[None] = []

    def lose_first_answer(request: httpx.Request) -> httpx.Response:
        response = server(request)
        if not first_answer_lost:
            first_answer_lost.append(None)
            raise httpx.ReadTimeout("timed out", request=request)
        return response

    client = WicksonClient(
        "http://wickson.test",
        "k",
        transport=httpx.MockTransport(lose_first_answer),
        sleep=sleeps.append,
        random_fraction=lambda: 0.5,
    )
    result = client.delete_media(ids(2))

    assert result.deleted == ids(2)
    assert result.failed == {}
    assert result.replayed_batches == 1
    assert result.operation_ids == ["batch_delete_1"]


def test_retries_exhausted_carries_what_was_done(server: FakeServer, sleeps: list[float]) -> None:
    server.live = set(ids(150))
    failing = envelope(500, "PROCESSING_ERROR", "quote the request_id")
    server.script = [None, failing, failing, failing]

    with pytest.raises(RetriesExhausted) as raised:
        make_client(server, sleeps, max_retries=2, backoff_base=1.0).delete_media(ids(150))

    error = raised.value
    assert error.attempts == 3
    assert "500 PROCESSING_ERROR: quote the request_id" in str(error)
    assert error.result.deleted == ids(100)
    assert error.batch is not None and list(error.batch.media_ids) == ids(50, 100)
    assert [len(b.media_ids) for b in error.remaining] == [50]
    assert sleeps == [0.5, 1.0]


@pytest.mark.parametrize(
    ("status", "code"),
    [
        (400, "INVALID_REQUEST"),
        (401, "INVALID_API_KEY"),
        (403, "INSUFFICIENT_PERMISSIONS"),
        (422, "IDEMPOTENCY_KEY_REUSED"),
    ],
)
def test_other_4xx_are_raised_at_once_with_the_envelope(
    server: FakeServer, sleeps: list[float], status: int, code: str
) -> None:
    server.live = set(ids(150))
    server.script = [None, envelope(status, code, "refused")]

    with pytest.raises(ApiError) as raised:
        make_client(server, sleeps).delete_media(ids(150))

    error = raised.value
    assert (error.status, error.code, error.server_message) == (status, code, "refused")
    assert error.request_id == "req_1"
    assert len(server.requests) == 2
    assert sleeps == []
    assert error.result.deleted == ids(100)


def test_a_smaller_server_batch_limit_is_followed(server: FakeServer, sleeps: list[float]) -> None:
    server.live = set(ids(120))
    server.script = [
        envelope(
            400,
            "BATCH_TOO_LARGE",
            "Maximum 50 media IDs per batch deletion",
            max_batch_size=50,
            received=100,
        )
    ]

    result = make_client(server, sleeps).delete_media(ids(120))

    assert [len(b["media_ids"]) for b in server.bodies()] == [100, 50, 50, 20]
    assert len(set(server.keys()[1:])) == 3
    assert result.deleted == ids(120)


def test_invalid_ids_are_refused_before_any_request(
    server: FakeServer, sleeps: list[float]
) -> None:
    with pytest.raises(ValueError, match="'bad id' is not a valid media id"):
        make_client(server, sleeps).delete_media(["vec-1", "bad id"])

    assert server.requests == []


def test_an_answer_that_is_not_the_documented_one_is_a_protocol_error(
    server: FakeServer, sleeps: list[float]
) -> None:
    server.script = [httpx.Response(200, text="<html>login</html>")]

    with pytest.raises(ProtocolError):
        make_client(server, sleeps).delete_media(["vec-1"])


def test_prepared_batches_keep_their_keys_and_hooks_run_per_batch(
    server: FakeServer, sleeps: list[float]
) -> None:
    server.live = set(ids(3))
    batches = [Batch(("vec-0000", "vec-0001"), "r", "key-a"), Batch(("vec-0002",), None, "key-b")]
    sent: list[Batch] = []
    answered: list[BatchResult] = []
    server.script = [rate_limited("3")]
    waits: list[tuple[float, str]] = []

    make_client(server, sleeps).delete_batches(
        batches,
        on_send=sent.append,
        on_batch=answered.append,
        on_wait=lambda s, why: waits.append((s, why)),
    )

    assert server.keys() == ["key-a", "key-a", "key-b"]
    assert sent == batches
    assert [a.batch for a in answered] == batches
    assert waits == [(3.0, "rate limited: Rate limit exceeded: 3 per 1 minute")]


def test_retry_after_accepts_seconds_and_http_dates() -> None:
    from datetime import UTC, datetime

    now = datetime(2026, 11, 25, 10, 0, 0, tzinfo=UTC)
    assert parse_retry_after("5", now) == 5.0
    assert parse_retry_after("Wed, 25 Nov 2026 10:00:30 GMT", now) == 30.0
    assert parse_retry_after("Wed, 25 Nov 2026 09:00:00 GMT", now) == 0.0
    assert parse_retry_after("soon", now) is None
    assert parse_retry_after(None, now) is None


def test_retry_after_outside_http_is_ignored_and_long_waits_are_capped() -> None:
    from datetime import UTC, datetime

    now = datetime(2026, 11, 25, 10, 0, 0, tzinfo=UTC)
    assert [parse_retry_after(v, now) for v in ("inf", "nan", "1e400", "-5", "2.5")] == [None] * 5
    assert parse_retry_after("999999999", now) == 86_400.0
    assert parse_retry_after("Fri, 25 Dec 2026 10:00:00 GMT", now) == 86_400.0
