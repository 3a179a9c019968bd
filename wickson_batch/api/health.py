"""Liveness and readiness: not authenticated, not rate limited."""

from __future__ import annotations

from flask import Blueprint, current_app
from flask.typing import ResponseReturnValue

from ..services.errors import STORE_ERRORS
from .context import stores
from .errors import ServiceUnavailable
from .ratelimits import limiter_of

bp = Blueprint("health", __name__)


@bp.route("/healthz", methods=["GET"])
def healthz() -> ResponseReturnValue:
    """Answer while the process serves requests."""
    return {"success": True, "data": {"status": "ok"}}


@bp.route("/readyz", methods=["GET"])
def readyz() -> ResponseReturnValue:
    """Answer 200 when both stores answer, else 503 naming the one that does not.

    `rate_limits` never makes it 503: "ok" (the storage answers), "degraded" (it does not,
    this worker limits from memory) or "memory" (RATELIMIT_STORAGE_URI is memory://).
    """
    held = stores()
    checks: dict[str, str] = {}
    for name, ping in (("database", held.db.ping), ("vectors", held.vectors.ping)):
        try:
            ping()
            checks[name] = "ok"
        except STORE_ERRORS:
            checks[name] = "unavailable"
    down = [name for name, state in checks.items() if state != "ok"]
    checks["rate_limits"] = limiter_of(current_app).storage_state()
    if down:
        raise ServiceUnavailable(f"Not ready: {', '.join(down)} unavailable", {"checks": checks})
    return {"success": True, "data": {"status": "ready", "checks": checks}}
