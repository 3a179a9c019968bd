"""Configuration: defaults, the testing variant, and the environment overlay."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from limits import parse_many

MiB = 1024 * 1024


class Config:
    """Production defaults; every key can be overridden from the environment."""

    DATA_DIR = "./var"
    DATABASE_URL: str | None = None  # default: sqlite:///$DATA_DIR/wickson.db
    QDRANT_URL: str | None = None
    QDRANT_API_KEY: str | None = None
    HD_DIM = 1024
    LD_DIM = 128
    RATE_LIMIT_DEFAULT = "600/minute"
    RATELIMIT_STORAGE_URI = "memory://"
    # Failed authentications allowed per client address; past it, every request from that
    # address that needs a key is refused with 429 until the window ends.
    AUTH_FAILURE_LIMIT = "20/minute"
    # Proxies in front of the app whose X-Forwarded-For is trusted (0: none, the peer is the
    # client). Set it to the number of load balancers/proxies that append to the header.
    TRUSTED_PROXY_HOPS = 0
    RATELIMIT_HEADERS_ENABLED = True
    RATELIMIT_STRATEGY = "fixed-window"
    MAX_BATCH_SIZE = 100
    MAX_CONTENT_LENGTH = 1 * MiB
    # Creating media carries up to 2 x 256 vectors, far more than a batch of ids
    # (the largest valid body at the default sizes is about 6 MiB).
    MEDIA_MAX_CONTENT_LENGTH = 8 * MiB
    LOG_LEVEL = "INFO"
    LOG_FORMAT = "json"
    # GET /metrics (Prometheus). Off: the route is not served (404); route only what the
    # public needs through the load balancer, and let Prometheus scrape the app directly.
    METRICS_ENABLED = True
    # The reconciler: how often it runs, and how old a task or pending row must be
    # before it is touched (a request may still be working on younger ones).
    RECONCILER_ENABLED = True
    RECONCILE_INTERVAL_SECONDS = 10.0
    RECONCILE_GRACE_SECONDS = 60.0
    # How long opening the embedded vector store waits for another process to let it go:
    # 0 refuses at once (the console script while the server runs). gunicorn.conf.py sets
    # it past graceful_timeout, so that a reload's new worker outwaits the old one.
    STORE_LOCK_WAIT_SECONDS = 0.0


class TestingConfig(Config):
    """Config for the test suite: no background thread, small vectors."""

    TESTING = True
    RECONCILER_ENABLED = False
    HD_DIM = 8
    LD_DIM = 4
    LOG_LEVEL = "WARNING"


_INT_KEYS = {
    "PORT",
    "HD_DIM",
    "LD_DIM",
    "MAX_BATCH_SIZE",
    "MAX_CONTENT_LENGTH",
    "MEDIA_MAX_CONTENT_LENGTH",
    "TRUSTED_PROXY_HOPS",
}
_FLOAT_KEYS = {"RECONCILE_INTERVAL_SECONDS", "RECONCILE_GRACE_SECONDS", "STORE_LOCK_WAIT_SECONDS"}
_BOOL_KEYS = {"RECONCILER_ENABLED", "METRICS_ENABLED"}
_STR_KEYS = {
    "DATA_DIR",
    "DATABASE_URL",
    "QDRANT_URL",
    "QDRANT_API_KEY",
    "RATE_LIMIT_DEFAULT",
    "RATELIMIT_STORAGE_URI",
    "AUTH_FAILURE_LIMIT",
    "LOG_LEVEL",
    "LOG_FORMAT",
}


# Every setting the environment can set (deploy/compose.yaml is checked against it).
ENV_KEYS = frozenset(_INT_KEYS | _FLOAT_KEYS | _BOOL_KEYS | _STR_KEYS)


class ConfigError(ValueError):
    """A configuration value that cannot be used."""


def _coerce(key: str, raw: str) -> Any:
    if key in _INT_KEYS:
        try:
            return int(raw)
        except ValueError:
            raise ConfigError(f"{key} must be a whole number, got {raw!r}") from None
    if key in _FLOAT_KEYS:
        try:
            return float(raw)
        except ValueError:
            raise ConfigError(f"{key} must be a number, got {raw!r}") from None
    if key in _BOOL_KEYS:
        return raw.strip().lower() in {"1", "true", "yes", "on"}
    return raw


def env_overlay(environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Return the settings present in the environment, typed."""
    environ = os.environ if environ is None else environ
    return {key: _coerce(key, environ[key]) for key in ENV_KEYS if environ.get(key, "") != ""}


def load_settings(
    base: type[Config] = Config,
    overrides: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Merge class defaults, then the environment, then explicit overrides."""
    settings = {key: getattr(base, key) for key in dir(base) if key.isupper()}
    settings.update(env_overlay(environ))
    settings.update(overrides or {})
    if not settings.get("DATABASE_URL"):
        path = os.path.abspath(os.path.join(settings["DATA_DIR"], "wickson.db"))
        settings["DATABASE_URL"] = f"sqlite:///{path}"
    for key in ("RATE_LIMIT_DEFAULT", "AUTH_FAILURE_LIMIT"):
        try:
            parse_many(str(settings[key]))
        except ValueError:
            raise ConfigError(
                f"{key} must be a rate limit like '600/minute', got {settings[key]!r}"
            ) from None
    for key in ("HD_DIM", "LD_DIM", "MAX_BATCH_SIZE"):
        if int(settings[key]) < 1:
            raise ConfigError(f"{key} must be at least 1, got {settings[key]}")
    return settings
