"""flask-limiter wiring: one bucket per API key, shared by all its routes."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from functools import partial
from typing import Any, TypeVar, cast
from urllib.parse import urlsplit

import structlog
from flask import Flask, Response, current_app, request
from flask_limiter import Limiter
from limits.storage import MemoryStorage, RedisStorage
from limits.strategies import RateLimiter
from redis import Redis

from ..config import REDIS_SCHEMES
from ..protocol import RETRY_AFTER_HEADER as RETRY_AFTER
from ..protocol import ErrorCode
from .auth import LIMITER_EXTENSION, quiet_principal
from .context import settings
from .errors import UNAVAILABLE_RETRY_AFTER_SECONDS
from .metrics import EXTENSION as METRICS_EXTENSION
from .metrics import Metrics

T = TypeVar("T")
# ratelimit.storage_unavailable is logged at most once per this many seconds (per worker).
UNAVAILABLE_LOG_SECONDS = 60.0

log = structlog.get_logger("wickson_batch")


class PreciseRedisStorage(RedisStorage):
    """Redis rate-limit storage that reads a window's end to the millisecond.

    limits' own reads it with TTL, in whole seconds rounded, so `X-RateLimit-Reset` (and
    `Retry-After`) could move by a second between two requests of one window. Registered
    for the Redis schemes in limits' storage registry, the library's way to customise a
    backend: `RATELIMIT_STORAGE_URI=redis://...` gets this class.
    """

    STORAGE_SCHEME = list(REDIS_SCHEMES)

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


def _error_code(response: Response) -> str | None:
    payload = response.get_json(silent=True) if response.is_json else None
    error = payload.get("error") if isinstance(payload, dict) else None
    return error.get("code") if isinstance(error, dict) else None


def _tidy_retry_after(response: Response) -> Response:
    # The one place that decides Retry-After. flask-limiter sets it on every limited response
    # and it can reach 0 at a window's edge: keep it only on 429s, and never below one second
    # there. A 409 IDEMPOTENCY_KEY_IN_USE (the key's first request is still running) asks for
    # a retry in one second (a 409 JOB_FINISHED asks for none: a retry cannot succeed); every
    # 503, whoever made it, in UNAVAILABLE_RETRY_AFTER_SECONDS.
    if response.status_code == 409 and _error_code(response) == ErrorCode.IDEMPOTENCY_KEY_IN_USE:
        response.headers[RETRY_AFTER] = "1"
    elif response.status_code == 503:
        response.headers[RETRY_AFTER] = str(UNAVAILABLE_RETRY_AFTER_SECONDS)
    elif response.status_code != 429:
        response.headers.pop(RETRY_AFTER, None)
    else:
        try:
            seconds = int(response.headers.get(RETRY_AFTER, "1"))
        except ValueError:
            seconds = 1
        response.headers[RETRY_AFTER] = str(max(1, seconds))
    return response


def _storage_label(uri: str) -> str:
    """The storage's scheme, host and port, never its credentials (for the log)."""
    parts = urlsplit(uri)
    where = f"{parts.hostname}:{parts.port}" if parts.port else (parts.hostname or parts.path)
    return f"{parts.scheme}://{where}"


class FallbackLimiter(Limiter):
    """flask-limiter's Limiter whose in-memory fallback is watched and shared with auth.

    flask-limiter (RATELIMIT_IN_MEMORY_FALLBACK_ENABLED) switches a worker to a MemoryStorage
    when a call to the storage fails inside its own checks, and back when the storage answers
    again (it retries after 1, 2, 4 ... 32 s). This class adds what it lacks: the same switch
    for the calls made outside those checks (the failed-authentication bucket, `run`), the
    event `ratelimit.storage_unavailable` at most once a minute, the metrics, and the state
    for /readyz. Its ties to the library's internals: `_storage_dead` (the flag that selects
    the fallback), `_in_memory_fallback_enabled`, `_check_request_limit` and the header hook
    `init_app` registers (Flask-Limiter is pinned; tests/integration/test_outages.py
    fails if any of them stops doing that).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._watch_lock = threading.Lock()
        self._seen_dead = False
        self._last_logged = -UNAVAILABLE_LOG_SECONDS
        self._unavailable_logged = False
        self._unlogged_failures = 0
        self.metrics: Metrics | None = None
        self.storage_label = ""

    @property
    def degraded(self) -> bool:
        """True while this worker serves limits from memory."""
        return bool(self._storage_dead) and not isinstance(self.storage, MemoryStorage)

    def storage_state(self) -> str:
        """For /readyz: "memory" (memory:// configured), "ok" or "degraded" (pings the storage).

        A storage that answers returns the worker to it at once; one that does not (within
        RATELIMIT_STORAGE_TIMEOUT_SECONDS) switches the worker to memory.
        """
        if isinstance(self.storage, MemoryStorage):
            return "memory"
        answered = self.storage.check()
        self._storage_dead = not answered
        self.watch()
        return "ok" if answered else "degraded"

    def run(self, operation: Callable[[RateLimiter], T]) -> T:
        """Run `operation` on the current strategy; if the storage fails, again on memory."""
        strategy = self.limiter
        try:
            return operation(strategy)
        except self.storage.base_exceptions as error:
            self._switch_to_memory(error)
            return operation(self.limiter)

    def _switch_to_memory(self, error: BaseException) -> None:
        if not self._in_memory_fallback_enabled:
            raise error
        self._storage_dead = True
        self.watch(error)

    # flask-limiter switches to memory on a storage error only if no other thread has done it
    # since: a request that was waiting on a silent Redis while another switched re-raises
    # (a 500). This and guard_header_hook redo it on memory instead.

    def _check_request_limit(
        self, callable_name: str | None = None, in_middleware: bool = True
    ) -> None:
        try:
            super()._check_request_limit(callable_name, in_middleware)
        except self.storage.base_exceptions as error:
            self._switch_to_memory(error)
            self.context.seen_limits.clear()
            super()._check_request_limit(callable_name, in_middleware)
        finally:
            self.watch()

    def guard_header_hook(self, app: Flask) -> None:
        """Wrap the after-request hook Limiter registers for its headers in the same retry."""
        hooks = app.after_request_funcs.setdefault(None, [])
        for n, hook in enumerate(hooks):
            if isinstance(hook, partial) and hook.args == (self,):
                inject = cast(Callable[[Response], Response], hook)

                def guarded(
                    response: Response, inject: Callable[..., Response] = inject
                ) -> Response:
                    try:
                        return inject(response)
                    except self.storage.base_exceptions as error:
                        self._switch_to_memory(error)
                        return inject(response)

                hooks[n] = guarded
                return
        raise RuntimeError("flask-limiter's header hook not found")  # a new Flask-Limiter

    def watch(self, error: BaseException | None = None) -> None:
        """Log and count a switch to memory or back, seen since the last call."""
        with self._watch_lock:
            dead = self.degraded
            if dead == self._seen_dead:
                return
            self._seen_dead = dead
            if self.metrics is not None:
                self.metrics.ratelimit_degraded.set(1 if dead else 0)
                if dead:
                    self.metrics.ratelimit_storage_errors.inc()
            now = time.monotonic()
            if dead:
                self._unlogged_failures += 1
                if now - self._last_logged < UNAVAILABLE_LOG_SECONDS:
                    return
                self._last_logged = now
                self._unavailable_logged = True
                log.warning(
                    "ratelimit.storage_unavailable",
                    storage=self.storage_label,
                    fallback="memory",
                    failures=self._unlogged_failures,
                    error=f"{type(error).__name__}: {error}" if error is not None else None,
                )
                self._unlogged_failures = 0
            elif self._unavailable_logged:
                self._unavailable_logged = False
                log.info("ratelimit.storage_recovered", storage=self.storage_label)


def limiter_of(app: Flask) -> FallbackLimiter:
    """The app's limiter."""
    return cast(FallbackLimiter, app.extensions[LIMITER_EXTENSION])


def _watch_after_request(response: Response) -> Response:
    # flask-limiter can also switch to memory while adding the X-RateLimit-* headers.
    limiter_of(current_app).watch()
    return response


def init_app(app: Flask) -> Limiter:
    """Attach the limiter; the health and spec routes are exempted where they are registered."""
    # Registered before the limiter so that it runs after the limiter's header injection.
    app.after_request(_tidy_retry_after)
    app.after_request(_watch_after_request)
    limiter = FallbackLimiter(
        rate_limit_key,
        app=app,
        application_limits=[rate_limit_for_request],
        headers_enabled=True,
    )
    limiter.guard_header_hook(app)
    limiter.metrics = app.extensions.get(METRICS_EXTENSION)
    limiter.storage_label = _storage_label(app.config["RATELIMIT_STORAGE_URI"])
    app.extensions[LIMITER_EXTENSION] = limiter
    return limiter
