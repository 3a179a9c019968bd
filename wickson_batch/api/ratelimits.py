"""flask-limiter wiring: one bucket per API key, shared by all its routes."""

from __future__ import annotations

import time
from typing import cast

from flask import Flask, Response, request
from flask_limiter import Limiter
from limits.storage import RedisStorage
from redis import Redis

from ..protocol import RETRY_AFTER_HEADER as RETRY_AFTER
from .auth import LIMITER_EXTENSION, quiet_principal
from .context import settings


class PreciseRedisStorage(RedisStorage):
    """Redis rate-limit storage that reads a window's end to the millisecond.

    limits' own reads it with TTL, in whole seconds rounded, so `X-RateLimit-Reset` (and
    `Retry-After`) could move by a second between two requests of one window. Registered
    for the Redis schemes in limits' storage registry, the library's way to customise a
    backend: `RATELIMIT_STORAGE_URI=redis://...` gets this class.
    """

    STORAGE_SCHEME = ["redis", "rediss", "redis+unix"]

    def get_expiry(self, key: str) -> float:
        connection = cast(Redis, self.get_connection(True))  # the redis schemes: redis-py
        milliseconds = int(connection.pttl(self.prefixed_key(key)))  # -2 gone, -1 no expiry
        return max(milliseconds, 0) / 1000 + time.time()


def rate_limit_key() -> str:
    """Bucket by API key; requests without a valid key share one bucket per client address."""
    principal = quiet_principal()
    if principal is not None:
        return f"key:{principal.key_id}"
    return f"addr:{request.remote_addr or 'unknown'}"


def rate_limit_for_request() -> str:
    """Return the key's own limit, or RATE_LIMIT_DEFAULT."""
    principal = quiet_principal()
    if principal is not None and principal.rate_limit:
        return principal.rate_limit
    return settings().rate_limit_default


def _tidy_retry_after(response: Response) -> Response:
    # flask-limiter sets Retry-After on every limited response and it can reach 0 at a
    # window's edge: keep it only on 429s, and never below one second there. A 409 (the
    # Idempotency-Key's first request is still running) asks for a retry in one second.
    if response.status_code == 409:
        response.headers[RETRY_AFTER] = "1"
    elif response.status_code != 429:
        response.headers.pop(RETRY_AFTER, None)
    else:
        try:
            seconds = int(response.headers.get(RETRY_AFTER, "1"))
        except ValueError:
            seconds = 1
        response.headers[RETRY_AFTER] = str(max(1, seconds))
    return response


def init_app(app: Flask) -> Limiter:
    """Attach the limiter; the health and spec routes are exempted where they are registered."""
    # Registered before the limiter so that it runs after the limiter's header injection.
    app.after_request(_tidy_retry_after)
    limiter = Limiter(
        rate_limit_key,
        app=app,
        application_limits=[rate_limit_for_request],
        headers_enabled=True,
    )
    app.extensions[LIMITER_EXTENSION] = limiter
    return limiter
