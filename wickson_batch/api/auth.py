"""X-Api-Key lookup, scopes, and the decorator views use."""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, ParamSpec, TypeVar, cast

from flask import Flask, current_app, g, request
from limits import parse

from ..db import DatabaseUnavailable
from ..protocol import API_KEY_HEADER, RETRY_AFTER_HEADER
from ..services.keys import KeyCache, Principal, authenticate
from .context import settings, stores
from .errors import InsufficientPermissions, InvalidApiKey, RateLimitExceeded

if TYPE_CHECKING:
    from .ratelimits import FallbackLimiter

LIMITER_EXTENSION = "wickson_limiter"
KEY_CACHE_EXTENSION = "wickson_key_cache"
P = ParamSpec("P")
R = TypeVar("R")

_UNSET = object()


def init_key_cache(app: Flask, ttl: float) -> None:
    """Give the app the cache of recently looked-up keys (API_KEY_CACHE_SECONDS)."""
    app.extensions[KEY_CACHE_EXTENSION] = KeyCache(ttl)


def key_cache() -> KeyCache:
    """Return the current app's cache of recently looked-up keys."""
    found: KeyCache = current_app.extensions[KEY_CACHE_EXTENSION]
    return found


def current_principal() -> Principal | None:
    """Authenticate the request's key once and remember the answer for the request."""
    found = g.get("principal", _UNSET)
    if found is _UNSET:
        key = request.headers.get(API_KEY_HEADER, "")
        found = authenticate(stores().db, key, key_cache()) if key else None
        g.principal = found
    return cast(Principal | None, found)


def quiet_principal() -> Principal | None:
    """The principal for the limiter: None when the lookup fails or the address is locked out.

    From a locked-out address a valid key is charged and labelled (X-RateLimit-*) like a
    wrong one, so the limiter's headers do not tell a guesser which key was right either.
    """
    try:
        if _locked_out():
            return None
        return current_principal()
    except DatabaseUnavailable:
        return None


def _failures_bucket() -> tuple[FallbackLimiter, str]:
    # Through the limiter's own storage and its in-memory fallback (ratelimits.py).
    limiter: FallbackLimiter = current_app.extensions[LIMITER_EXTENSION]
    return limiter, f"authfail:{request.remote_addr or 'unknown'}"


def _locked_out() -> bool:
    """True when this request's address has used up AUTH_FAILURE_LIMIT (read once a request)."""
    locked = g.get("auth_locked_out")
    if locked is None:
        limiter, address = _failures_bucket()
        limit = parse(settings().auth_failure_limit)
        locked = g.auth_locked_out = not limiter.run(lambda rule: rule.test(limit, address))
    return bool(locked)


def refuse_if_guessing() -> None:
    """Refuse every keyed request from an address that failed authentication too often.

    A valid key is refused too, so the answer never tells a guesser which key was right.
    """
    if _locked_out():
        limiter, address = _failures_bucket()
        limit = parse(settings().auth_failure_limit)
        reset_at, _ = limiter.run(lambda rule: rule.get_window_stats(limit, address))
        wait = max(1, int(reset_at - time.time() + 0.999))
        raise RateLimitExceeded(
            f"Too many failed authentications from this address; retry in {wait} seconds",
            {"limit": str(limit)},
            {RETRY_AFTER_HEADER: str(wait)},
        )


def _count_failure() -> None:
    limiter, address = _failures_bucket()
    limit = parse(settings().auth_failure_limit)
    limiter.run(lambda rule: rule.hit(limit, address))


def require_scope(*scopes: str) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Let a view run only for a valid key that holds one of `scopes`."""

    def decorate(view: Callable[P, R]) -> Callable[P, R]:
        @functools.wraps(view)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            refuse_if_guessing()
            principal = current_principal()
            if principal is None:
                _count_failure()
                raise InvalidApiKey(
                    f"A valid API key is required in the {API_KEY_HEADER} header",
                    {"header": API_KEY_HEADER},
                )
            if principal.scopes.isdisjoint(scopes):
                if len(scopes) == 1:
                    raise InsufficientPermissions(
                        f"This API key lacks the {scopes[0]} scope",
                        {"required_scope": scopes[0]},
                    )
                raise InsufficientPermissions(
                    f"This API key needs one of the scopes {', '.join(scopes)}",
                    {"required_scopes": list(scopes)},
                )
            return view(*args, **kwargs)

        return wrapper

    return decorate


def require_principal() -> Principal:
    """Return the authenticated principal inside a view guarded by require_scope."""
    principal = current_principal()
    assert principal is not None, "view is not guarded by require_scope"
    return principal
