"""API keys, scopes, per-key rate limits, request ids and the headers every response carries."""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from limits import parse
from limits.storage import storage_from_string
from limits.strategies import FixedWindowRateLimiter
from sqlalchemy import text
from werkzeug.test import TestResponse

from tests import servers
from tests.helpers import Caller, body, settings_for, settings_of, stores_of, unknown_id, vector
from wickson_batch import create_app
from wickson_batch.api.ratelimits import PreciseRedisStorage
from wickson_batch.config import ConfigError, load_settings
from wickson_batch.protocol import SCOPES
from wickson_batch.services import keys

REQUEST_ID = re.compile(r"^req_[0-9a-f]{32}$")
MISSING_KEY_MESSAGE = "A valid API key is required in the X-Api-Key header"
LIMIT_HEADERS = ("X-RateLimit-Limit", "X-RateLimit-Remaining", "X-RateLimit-Reset")
UNLIMITED_PATHS = ("/healthz", "/readyz", "/openapi.json")


def assert_error(response: TestResponse, status: int, code: str) -> dict[str, Any]:
    """Check an error response's status, envelope and request id; return its other details."""
    assert response.status_code == status, response.data[:300]
    assert response.headers["Content-Type"] == "application/json"
    payload = body(response)
    assert payload["success"] is False
    assert payload["error"]["code"] == code
    details = dict(payload["error"]["details"])
    assert details.pop("request_id") == response.headers["X-Request-ID"]
    return details


def call(
    client: FlaskClient, app: Flask, route: str, key: str | None, media_id: str
) -> TestResponse:
    """Make a valid request to one of the scoped routes, with `key` (or none)."""
    headers = {} if key is None else {"X-Api-Key": key}
    hd = vector(settings_of(app).hd_dim, 1)
    if route == "batch":
        return client.delete("/v1/media/batch", json={"media_ids": [media_id]}, headers=headers)
    if route == "batch-post":
        payload = {"media_ids": [media_id]}
        return client.post("/v1/media/batch/delete", json=payload, headers=headers)
    if route == "get":
        return client.get(f"/v1/media/{media_id}", headers=headers)
    if route == "search":
        return client.post("/v1/media/search", json={"vector": hd, "space": "hd"}, headers=headers)
    assert route == "create"
    return client.post("/v1/media", json={"hd_vectors": [hd]}, headers=headers)


ROUTE_SCOPES = {
    "batch": "media:delete",
    "batch-post": "media:delete",
    "get": "media:read",
    "search": "media:read",
    "create": "media:write",
}
SUCCESS = {"batch": 200, "batch-post": 200, "get": 200, "search": 200, "create": 201}


@pytest.fixture
def mine(alice: Caller) -> str:
    """One media of alice's."""
    return alice.create(hd=1, ld=1, seed=1)


def media_count(app: Flask) -> int:
    with stores_of(app).db.engine.connect() as connection:
        return int(connection.execute(text("SELECT count(*) FROM media")).scalar_one())


# --- INVALID_API_KEY --------------------------------------------------------------------


@pytest.mark.parametrize("route", ROUTE_SCOPES)
def test_a_missing_key_is_invalid_api_key(
    app: Flask, client: FlaskClient, alice: Caller, mine: str, route: str
) -> None:
    response = call(client, app, route, None, mine)

    details = assert_error(response, 401, "INVALID_API_KEY")
    assert body(response)["message"] == MISSING_KEY_MESSAGE
    assert details == {"header": "X-Api-Key"}
    assert media_count(app) == 1
    assert alice.get(mine).status_code == 200


@pytest.mark.parametrize(
    "key",
    [
        pytest.param("wkb_" + "A" * 43, id="well-formed"),
        pytest.param("not-a-key", id="no-prefix"),
        pytest.param("wkb_", id="prefix-only"),
        pytest.param("wkb_" + "A" * 5000, id="very-long"),
    ],
)
@pytest.mark.parametrize("route", ["batch", "get"])
def test_an_unknown_key_is_invalid_api_key(
    app: Flask, client: FlaskClient, alice: Caller, mine: str, key: str, route: str
) -> None:
    response = call(client, app, route, key, mine)

    assert assert_error(response, 401, "INVALID_API_KEY") == {"header": "X-Api-Key"}
    assert alice.get(mine).status_code == 200


def test_the_hash_of_a_key_is_not_a_key(
    app: Flask, client: FlaskClient, alice: Caller, mine: str
) -> None:
    response = call(client, app, "get", hashlib.sha256(alice.key.encode()).hexdigest(), mine)

    assert_error(response, 401, "INVALID_API_KEY")


@pytest.mark.parametrize("route", ["batch", "get"])
def test_a_revoked_key_is_invalid_api_key(
    app: Flask, client: FlaskClient, alice: Caller, mine: str, route: str
) -> None:
    db = stores_of(app).db
    info, secret = keys.create_key(db, owner="alice")
    assert call(client, app, "get", secret, mine).status_code == 200
    keys.revoke_key(db, info.id)

    response = call(client, app, route, secret, mine)

    assert_error(response, 401, "INVALID_API_KEY")
    assert alice.get(mine).status_code == 200


def _revoke_as_another_process(app: Flask, key_id: int) -> None:
    """Revoke a key the way `wickson-batch keys revoke` in another process does: in SQL only."""
    with stores_of(app).db.engine.begin() as connection:
        connection.execute(
            text("UPDATE api_keys SET revoked_at = CURRENT_TIMESTAMP WHERE id = :id"),
            {"id": key_id},
        )


def test_a_key_revoked_by_another_process_is_refused_within_the_cache_bound(
    app: Flask, client: FlaskClient, mine: str
) -> None:
    bound = settings_of(app).api_key_cache_seconds
    assert bound == 1.0  # the documented default, and the most API_KEY_CACHE_SECONDS allows
    info, secret = keys.create_key(stores_of(app).db, owner="alice")
    assert call(client, app, "get", secret, mine).status_code == 200  # looked up: cached
    _revoke_as_another_process(app, info.id)
    revoked = time.monotonic()

    # Refused by every request that starts more than the bound after the revocation.
    time.sleep(bound)
    for route in ("get", "batch"):
        assert time.monotonic() - revoked >= bound
        assert_error(call(client, app, route, secret, mine), 401, "INVALID_API_KEY")


def test_a_cached_key_is_trusted_for_the_bound_and_looked_up_again_after(app: Flask) -> None:
    db = stores_of(app).db
    info, secret = keys.create_key(db, owner="alice")
    now = [100.0]
    cache = keys.KeyCache(1.0, clock=lambda: now[0])
    principal = keys.authenticate(db, secret, cache)
    assert principal is not None and principal.key_id == info.id
    _revoke_as_another_process(app, info.id)

    now[0] += 0.999  # within the bound: the lookup of 0.999 s ago still answers
    assert keys.authenticate(db, secret, cache) == principal
    now[0] += 0.001  # the bound reached: looked up again, and refused
    assert keys.authenticate(db, secret, cache) is None
    assert keys.authenticate(db, secret, cache) is None  # a wrong key is never cached


def test_revoking_in_this_process_voids_every_cached_lookup_at_once(app: Flask) -> None:
    db = stores_of(app).db
    info, secret = keys.create_key(db, owner="alice")
    cache = keys.KeyCache(1.0, clock=lambda: 0.0)  # time stands still: only revocation ends it
    assert keys.authenticate(db, secret, cache) is not None

    keys.revoke_key(db, info.id)

    assert keys.authenticate(db, secret, cache) is None


def test_without_the_key_cache_a_revocation_elsewhere_is_refused_at_once(tmp_path: Path) -> None:
    app = create_app(settings_for(tmp_path, "edge", API_KEY_CACHE_SECONDS=0))
    try:
        client = app.test_client()
        info, secret = keys.create_key(stores_of(app).db, owner="alice")
        missing = f"/v1/media/{unknown_id()}"
        assert client.get(missing, headers={"X-Api-Key": secret}).status_code == 404
        _revoke_as_another_process(app, info.id)
        response = client.get(missing, headers={"X-Api-Key": secret})
        assert_error(response, 401, "INVALID_API_KEY")
    finally:
        stores_of(app).close()


def test_a_key_cache_longer_than_one_second_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="API_KEY_CACHE_SECONDS must be between 0 and 1"):
        load_settings(settings_for(tmp_path, "edge", API_KEY_CACHE_SECONDS=1.5))


def test_revoking_one_key_leaves_the_owners_other_keys_working(
    app: Flask, client: FlaskClient, alice: Caller, mine: str
) -> None:
    info, _ = keys.create_key(stores_of(app).db, owner="alice")

    keys.revoke_key(stores_of(app).db, info.id)

    assert alice.get(mine).status_code == 200


def test_authentication_comes_before_body_validation(client: FlaskClient) -> None:
    response = client.delete("/v1/media/batch", data="not json", content_type="text/plain")

    assert_error(response, 401, "INVALID_API_KEY")


# --- INSUFFICIENT_PERMISSIONS -----------------------------------------------------------


@pytest.mark.parametrize("route", ROUTE_SCOPES)
def test_a_key_without_the_routes_scope_is_insufficient_permissions(
    app: Flask,
    client: FlaskClient,
    alice: Caller,
    mine: str,
    make_key: Callable[..., str],
    route: str,
) -> None:
    scope = ROUTE_SCOPES[route]
    key = make_key("alice", scopes=[s for s in SCOPES if s != scope])

    response = call(client, app, route, key, mine)

    details = assert_error(response, 403, "INSUFFICIENT_PERMISSIONS")
    assert body(response)["message"] == f"This API key lacks the {scope} scope"
    assert details == {"required_scope": scope}
    assert media_count(app) == 1
    assert alice.get(mine).status_code == 200


@pytest.mark.parametrize("route", ROUTE_SCOPES)
def test_a_key_with_only_the_routes_scope_is_allowed(
    app: Flask,
    client: FlaskClient,
    mine: str,
    make_key: Callable[..., str],
    route: str,
) -> None:
    key = make_key("alice", scopes=[ROUTE_SCOPES[route]])

    response = call(client, app, route, key, mine)

    assert response.status_code == SUCCESS[route], response.data[:300]


def test_a_key_without_scopes_is_refused_everywhere(
    app: Flask, client: FlaskClient, mine: str, make_key: Callable[..., str]
) -> None:
    key = make_key("alice", scopes=[])

    statuses = [call(client, app, route, key, mine).status_code for route in ROUTE_SCOPES]

    assert statuses == [403] * len(ROUTE_SCOPES)


# --- how keys are made and stored -------------------------------------------------------


def test_keys_are_stored_only_as_their_sha256_hash(app: Flask) -> None:
    _, secret = keys.create_key(stores_of(app).db, owner="alice", name="partner")

    with stores_of(app).db.engine.connect() as connection:
        rows = connection.execute(text("SELECT * FROM api_keys")).mappings().all()

    assert len(rows) == 1
    assert rows[0]["key_hash"] == hashlib.sha256(secret.encode()).hexdigest()
    stored = " ".join(str(value) for value in rows[0].values())
    assert secret not in stored
    assert secret.removeprefix("wkb_") not in stored


def test_the_secret_never_reaches_the_database_files(app: Flask, tmp_path: Path) -> None:
    _, secret = keys.create_key(stores_of(app).db, owner="alice")
    stores_of(app).db.dispose()

    files = [path for path in tmp_path.rglob("wickson.db*") if path.is_file()]

    assert files
    digest = hashlib.sha256(secret.encode()).hexdigest().encode()
    contents = b"".join(path.read_bytes() for path in files)
    assert digest in contents
    assert secret.encode() not in contents


def test_a_secret_has_the_prefix_and_high_entropy(app: Flask) -> None:
    secrets = {keys.create_key(stores_of(app).db, owner="alice")[1] for _ in range(20)}

    assert len(secrets) == 20
    for secret in secrets:
        assert secret.startswith("wkb_")
        assert re.fullmatch(r"wkb_[A-Za-z0-9_-]{43,}", secret), secret


# --- rate limits ------------------------------------------------------------------------


@pytest.fixture
def limited(app: Flask, client: FlaskClient, make_key: Callable[..., str]) -> Caller:
    """A caller of alice's whose key allows 3 requests a minute."""
    return Caller(client, make_key("alice", rate_limit="3/minute"), app)


def test_a_keys_own_limit_allows_exactly_that_many_requests(limited: Caller, mine: str) -> None:
    statuses = [limited.get(mine).status_code for _ in range(4)]

    assert statuses == [200, 200, 200, 429]


def test_the_429_is_in_the_envelope_with_retry_after(limited: Caller, mine: str) -> None:
    for _ in range(3):
        limited.get(mine)

    response = limited.get(mine)

    details = assert_error(response, 429, "RATE_LIMIT_EXCEEDED")
    assert body(response)["message"] == "Rate limit exceeded: 3 per 1 minute"
    assert details == {"limit": "3 per 1 minute"}
    retry_after = response.headers["Retry-After"]
    assert retry_after.isdigit()
    assert 1 <= int(retry_after) <= 60


def test_a_429_carries_the_rate_limit_headers(limited: Caller, mine: str) -> None:
    for _ in range(3):
        limited.get(mine)

    response = limited.get(mine)

    assert response.status_code == 429
    assert response.headers["X-RateLimit-Limit"] == "3"
    assert response.headers["X-RateLimit-Remaining"] == "0"


def test_limited_routes_carry_the_rate_limit_headers(limited: Caller, mine: str) -> None:
    started = time.time()

    responses = [limited.get(mine) for _ in range(3)]

    assert [r.headers["X-RateLimit-Limit"] for r in responses] == ["3", "3", "3"]
    assert [r.headers["X-RateLimit-Remaining"] for r in responses] == ["2", "1", "0"]
    resets = {int(r.headers["X-RateLimit-Reset"]) for r in responses}
    assert len(resets) == 1
    assert started - 1 <= resets.pop() <= started + 61


@pytest.mark.skipif(not servers.SERVER_PASS, reason="Redis: in the server pass")
def test_on_redis_a_windows_end_does_not_move_between_requests() -> None:
    # Read with TTL (whole seconds) it moved by up to a second: the test above saw two
    # X-RateLimit-Reset values for three requests of one window.
    storage = storage_from_string(servers.require().redis)
    assert isinstance(storage, PreciseRedisStorage)
    limiter, limit, bucket = FixedWindowRateLimiter(storage), parse("3/minute"), unknown_id()
    assert limiter.hit(limit, bucket)

    ends = []
    for _ in range(4):
        ends.append(limiter.get_window_stats(limit, bucket).reset_time)
        time.sleep(0.3)

    assert max(ends) - min(ends) < 0.05
    assert time.time() + 58 < ends[0] <= time.time() + 60


def test_readyz_names_the_rate_limit_storage(client: FlaskClient) -> None:
    # memory:// (the default pass) is per worker by design; Redis answering is "ok".
    checks = body(client.get("/readyz"))["data"]["checks"]

    assert checks["rate_limits"] == ("ok" if servers.SERVER_PASS else "memory")


def test_redis_storage_calls_time_out_and_fall_back_to_memory() -> None:
    redis_uri = {"RATELIMIT_STORAGE_URI": "redis://127.0.0.1:1/0"}
    config = load_settings(redis_uri, environ={}).flask_config()

    assert config["RATELIMIT_STORAGE_OPTIONS"] == {
        "socket_timeout": 0.5,
        "socket_connect_timeout": 0.5,
    }
    assert config["RATELIMIT_IN_MEMORY_FALLBACK_ENABLED"] is True
    assert load_settings(environ={}).flask_config()["RATELIMIT_STORAGE_OPTIONS"] == {}


@pytest.mark.parametrize("route", ROUTE_SCOPES)
def test_every_scoped_route_carries_the_rate_limit_headers(
    app: Flask, client: FlaskClient, limited: Caller, mine: str, route: str
) -> None:
    response = call(client, app, route, limited.key, mine)

    assert response.status_code == SUCCESS[route]
    assert response.headers["X-RateLimit-Limit"] == "3"
    assert response.headers["X-RateLimit-Remaining"] == "2"


def test_no_retry_after_on_successful_responses(limited: Caller, mine: str) -> None:
    responses = [limited.get(mine) for _ in range(3)]

    assert [r.status_code for r in responses] == [200, 200, 200]
    assert ["Retry-After" in r.headers for r in responses] == [False, False, False]


def test_no_retry_after_on_error_responses_of_limited_routes(limited: Caller, mine: str) -> None:
    responses = [limited.get(unknown_id()), limited.delete_batch([]), limited.delete_batch(None)]

    assert [r.status_code for r in responses] == [404, 400, 400]
    assert ["Retry-After" in r.headers for r in responses] == [False, False, False]


def test_one_bucket_is_shared_by_all_routes_of_a_key(limited: Caller, mine: str) -> None:
    first = limited.get(mine)
    second = limited.get(mine)
    third = limited.delete_batch([unknown_id()])

    fourth = limited.search(vector(settings_of(limited.app).hd_dim, 1))

    assert [first.status_code, second.status_code, third.status_code] == [200, 200, 200]
    assert third.headers["X-RateLimit-Remaining"] == "0"
    assert_error(fourth, 429, "RATE_LIMIT_EXCEEDED")


def test_a_refused_batch_still_uses_the_bucket(limited: Caller, mine: str) -> None:
    limited.delete_batch(None)
    limited.delete_batch([unknown_id()] * 101)
    limited.get(mine)

    assert_error(limited.get(mine), 429, "RATE_LIMIT_EXCEEDED")


def test_a_limited_key_does_not_touch_the_media(limited: Caller, alice: Caller, mine: str) -> None:
    for _ in range(3):
        limited.get(unknown_id())

    response = limited.delete_batch([mine])

    assert_error(response, 429, "RATE_LIMIT_EXCEEDED")
    assert alice.get(mine).status_code == 200


def test_another_key_of_the_same_owner_is_not_affected(
    limited: Caller, alice: Caller, mine: str
) -> None:
    for _ in range(4):
        limited.get(mine)

    response = alice.get(mine)

    assert response.status_code == 200
    assert response.headers["X-RateLimit-Limit"] == "10000"


def test_another_keys_limit_of_the_same_size_is_its_own(
    app: Flask, client: FlaskClient, limited: Caller, make_key: Callable[..., str], mine: str
) -> None:
    other = Caller(client, make_key("alice", rate_limit="3/minute"), app)
    for _ in range(4):
        limited.get(mine)

    statuses = [other.get(mine).status_code for _ in range(4)]

    assert statuses == [200, 200, 200, 429]


@pytest.fixture
def tight_app(tmp_path: Path, engine: str) -> Iterator[Flask]:
    """An app whose default limit is 2 requests a minute."""
    app = create_app(settings_for(tmp_path, engine, RATE_LIMIT_DEFAULT="2/minute"))
    yield app
    stores_of(app).close()


@pytest.fixture
def tight_caller(tight_app: Flask) -> Caller:
    """A caller of the tight app whose key has no limit of its own."""
    _, secret = keys.create_key(stores_of(tight_app).db, owner="alice")
    return Caller(tight_app.test_client(), secret, tight_app)


def test_the_default_limit_comes_from_rate_limit_default(tight_caller: Caller) -> None:
    responses = [tight_caller.get(unknown_id()) for _ in range(3)]

    assert [r.status_code for r in responses] == [404, 404, 429]
    assert responses[0].headers["X-RateLimit-Limit"] == "2"
    assert body(responses[2])["message"] == "Rate limit exceeded: 2 per 1 minute"


def test_a_keys_own_limit_overrides_the_default(tight_app: Flask) -> None:
    _, secret = keys.create_key(stores_of(tight_app).db, owner="alice", rate_limit="3/minute")
    caller = Caller(tight_app.test_client(), secret, tight_app)

    statuses = [caller.get(unknown_id()).status_code for _ in range(4)]

    assert statuses == [404, 404, 404, 429]


@pytest.mark.parametrize("path", UNLIMITED_PATHS)
def test_health_and_spec_routes_are_never_limited(tight_caller: Caller, path: str) -> None:
    anonymous = [tight_caller.client.get(path) for _ in range(5)]
    with_key = [tight_caller.client.get(path, headers=tight_caller.headers) for _ in range(5)]

    assert [r.status_code for r in anonymous + with_key] == [200] * 10


@pytest.mark.parametrize("path", UNLIMITED_PATHS)
def test_health_and_spec_routes_carry_no_rate_limit_headers(
    tight_caller: Caller, path: str
) -> None:
    response = tight_caller.client.get(path, headers=tight_caller.headers)

    assert response.status_code == 200
    assert [h for h in (*LIMIT_HEADERS, "Retry-After") if h in response.headers] == []


@pytest.mark.parametrize("path", UNLIMITED_PATHS)
def test_health_and_spec_routes_answer_when_the_key_is_exhausted(
    tight_caller: Caller, path: str
) -> None:
    for _ in range(3):
        tight_caller.get(unknown_id())

    response = tight_caller.client.get(path, headers=tight_caller.headers)

    assert response.status_code == 200


def test_health_and_spec_requests_do_not_use_the_keys_bucket(tight_caller: Caller) -> None:
    for path in UNLIMITED_PATHS * 3:
        tight_caller.client.get(path, headers=tight_caller.headers)

    response = tight_caller.get(unknown_id())

    assert response.status_code == 404
    assert response.headers["X-RateLimit-Remaining"] == "1"


# --- request ids and common headers -----------------------------------------------------


def sample_requests(caller: Caller, media_id: str) -> list[TestResponse]:
    """One response of each kind: successes, client errors of every sort, spec and health."""
    client = caller.client
    return [
        client.get("/healthz"),
        client.get("/readyz"),
        client.get("/openapi.json"),
        caller.get(media_id),
        caller.get(unknown_id()),
        caller.delete_batch([unknown_id()]),
        caller.delete_batch(None),
        client.delete(
            "/v1/media/batch", data="x", content_type="text/plain", headers=caller.headers
        ),
        client.delete("/v1/media/batch"),
        client.get("/nowhere"),
        client.put("/v1/media/batch"),
    ]


def test_every_response_carries_a_new_request_id(alice: Caller, mine: str) -> None:
    responses = sample_requests(alice, mine)

    ids = [r.headers["X-Request-ID"] for r in responses]
    assert all(REQUEST_ID.match(i) for i in ids), ids
    assert len(set(ids)) == len(ids)


def test_a_429_carries_a_request_id(limited: Caller, mine: str) -> None:
    for _ in range(3):
        limited.get(mine)

    response = limited.get(mine)

    assert REQUEST_ID.match(response.headers["X-Request-ID"])


def test_a_500_carries_the_request_id_in_header_and_body(
    alice: Caller, mine: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    def explode(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr("wickson_batch.api.media.deletion.delete_batch", explode)

    response = alice.client.delete(
        "/v1/media/batch",
        json={"media_ids": [mine]},
        headers={**alice.headers, "X-Request-ID": "trace-500"},
    )

    assert response.headers["X-Request-ID"] == "trace-500"
    assert body(response)["error"]["details"]["request_id"] == "trace-500"


@pytest.mark.parametrize(
    "incoming",
    ["abc-123", "trace.4f2a:span_9", "A" * 128, "0"],
)
def test_a_sane_incoming_request_id_is_echoed(alice: Caller, mine: str, incoming: str) -> None:
    response = alice.client.get(
        f"/v1/media/{mine}", headers={**alice.headers, "X-Request-ID": incoming}
    )

    assert response.status_code == 200
    assert response.headers["X-Request-ID"] == incoming


def test_an_echoed_request_id_is_quoted_in_the_error_body(alice: Caller) -> None:
    response = alice.client.get(
        f"/v1/media/{unknown_id()}", headers={**alice.headers, "X-Request-ID": "caller-trace-1"}
    )

    assert response.status_code == 404
    assert response.headers["X-Request-ID"] == "caller-trace-1"
    assert body(response)["error"]["details"]["request_id"] == "caller-trace-1"


@pytest.mark.parametrize(
    "incoming",
    [
        pytest.param("A" * 129, id="129-chars"),
        pytest.param("r" * 300, id="300-chars"),
        pytest.param("has spaces in it", id="spaces"),
        pytest.param("<script>alert(1)</script>", id="markup"),
        pytest.param("id/with/slashes", id="slashes"),
        pytest.param('quote"d', id="quote"),
        pytest.param("", id="empty"),
    ],
)
def test_an_insane_incoming_request_id_is_replaced(alice: Caller, mine: str, incoming: str) -> None:
    response = alice.client.get(
        f"/v1/media/{unknown_id()}", headers={**alice.headers, "X-Request-ID": incoming}
    )

    replaced = response.headers["X-Request-ID"]
    assert REQUEST_ID.match(replaced), replaced
    assert body(response)["error"]["details"]["request_id"] == replaced


def test_every_response_is_nosniff_and_not_cached(alice: Caller, mine: str) -> None:
    responses = sample_requests(alice, mine)

    assert [r.headers.get("X-Content-Type-Options") for r in responses] == ["nosniff"] * len(
        responses
    )
    assert [r.headers.get("Cache-Control") for r in responses] == ["no-store"] * len(responses)


def test_every_api_response_is_json(alice: Caller, mine: str) -> None:
    responses = sample_requests(alice, mine)

    assert [r.headers["Content-Type"] for r in responses] == ["application/json"] * len(responses)


def test_a_429_is_nosniff_and_not_cached(limited: Caller, mine: str) -> None:
    for _ in range(3):
        limited.get(mine)

    response = limited.get(mine)

    assert response.status_code == 429
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["Cache-Control"] == "no-store"
