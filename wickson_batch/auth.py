"""X-Api-Key lookup, scopes, and the decorator views use."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import ParamSpec, TypeVar, cast

from flask import g, request

from .errors import InsufficientPermissions, InvalidApiKey
from .services.errors import DomainError
from .services.keys import Principal, authenticate
from .stores import stores

API_KEY_HEADER = "X-Api-Key"
P = ParamSpec("P")
R = TypeVar("R")

_UNSET = object()


def current_principal() -> Principal | None:
    """Authenticate the request's key once and remember the answer for the request."""
    found = g.get("principal", _UNSET)
    if found is _UNSET:
        key = request.headers.get(API_KEY_HEADER, "")
        found = authenticate(stores().db, key) if key else None
        g.principal = found
    return cast(Principal | None, found)


def quiet_principal() -> Principal | None:
    """Like current_principal, but None when the lookup itself fails (for the limiter)."""
    try:
        return current_principal()
    except DomainError:
        return None


def require_scope(scope: str) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Let a view run only for a valid key that holds `scope`."""

    def decorate(view: Callable[P, R]) -> Callable[P, R]:
        @functools.wraps(view)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            principal = current_principal()
            if principal is None:
                raise InvalidApiKey(
                    f"A valid API key is required in the {API_KEY_HEADER} header",
                    {"header": API_KEY_HEADER},
                )
            if scope not in principal.scopes:
                raise InsufficientPermissions(
                    f"This API key lacks the {scope} scope",
                    {"required_scope": scope},
                )
            return view(*args, **kwargs)

        wrapper.required_scope = scope  # type: ignore[attr-defined]
        return wrapper

    return decorate


def require_principal() -> Principal:
    """Return the authenticated principal inside a view guarded by require_scope."""
    principal = current_principal()
    assert principal is not None, "view is not guarded by require_scope"
    return principal
