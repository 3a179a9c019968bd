"""Settings: typed, frozen, from defaults, then the environment, then explicit overrides."""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from typing import Any

from limits import parse_many

MiB = 1024 * 1024
_DEFAULT_DATA_DIR = "./var"

# The write orderings a Qdrant server accepts for an update (qdrant-client's WriteOrdering).
QDRANT_WRITE_ORDERINGS = ("weak", "medium", "strong")
LOG_FORMATS = ("json", "console")
# The rate-limit storage URIs served by redis-py (they take its socket timeouts).
REDIS_SCHEMES = ("redis", "rediss", "redis+unix")


class ConfigError(ValueError):
    """A configuration value that cannot be used."""


@dataclass(frozen=True, slots=True)
class Settings:
    """Every setting of the service; each field is read from the variable of its name upper-cased.

    Built once by `load_settings`; every component takes its values from here and none reads
    the environment itself.
    """

    # gunicorn (gunicorn.conf.py): the bind address, and workers/threads with shared stores.
    host: str = "127.0.0.1"
    port: int = 8000
    web_concurrency: int = 4
    threads: int = 8

    data_dir: str = _DEFAULT_DATA_DIR
    database_url: str = ""  # empty: sqlite:///$DATA_DIR/wickson.db
    # How long a statement waits for a lock (PostgreSQL lock_timeout; SQLite's busy
    # timeout; also the pool checkout) and how long any statement runs (PostgreSQL
    # statement_timeout); past either the request is 503 with Retry-After.
    db_lock_timeout_ms: int = 2_000
    db_statement_timeout_ms: int = 10_000
    qdrant_url: str | None = None
    qdrant_api_key: str | None = None
    # Used when the server adapter creates the collections on a Qdrant cluster
    # (docs/operations.md says what each means for a deletion's durability).
    qdrant_shard_number: int | None = None
    qdrant_replication_factor: int | None = None
    qdrant_write_consistency_factor: int | None = None
    qdrant_write_ordering: str = "weak"
    qdrant_prefer_grpc: bool = False
    # Whole seconds: qdrant-client takes its timeout as an integer.
    qdrant_timeout_seconds: int = 10
    hd_dim: int = 1024
    ld_dim: int = 128

    rate_limit_default: str = "600/minute"
    ratelimit_storage_uri: str = "memory://"
    ratelimit_strategy: str = "fixed-window"
    # How long one call to a Redis rate-limit storage may wait (connect, then each answer)
    # before the worker serves limits from its own memory until Redis answers again.
    ratelimit_storage_timeout_seconds: float = 0.5
    # Failed authentications allowed per client address; past it, every request from that
    # address that needs a key is refused with 429 until the window ends.
    auth_failure_limit: str = "20/minute"
    # How long a worker trusts a key it has looked up (0: look every request up): a key
    # revoked by another process is refused at the latest this long after the revocation;
    # one revoked in the worker's own process at once. At most 1.
    api_key_cache_seconds: float = 1.0
    # Proxies in front of the app whose X-Forwarded-For is trusted (0: none, the peer is the
    # client). Set it to the number of load balancers/proxies that append to the header.
    trusted_proxy_hops: int = 0

    max_batch_size: int = 100
    max_content_length: int = 1 * MiB
    # Creating media carries up to 2 x 256 vectors, far more than a batch of ids
    # (the largest valid body at the default sizes is about 6 MiB).
    media_max_content_length: int = 8 * MiB

    log_level: str = "INFO"
    log_format: str = "json"
    # GET /metrics (Prometheus). Off: the route is not served (404); route only what the
    # public needs through the load balancer, and let Prometheus scrape the app directly.
    metrics_enabled: bool = True

    # The reconciler: how often it runs, and how old a task or pending row must be
    # before it is touched (a request may still be working on younger ones).
    reconciler_enabled: bool = True
    reconcile_interval_seconds: float = 10.0
    reconcile_grace_seconds: float = 60.0
    # The deletion-job runner (DESIGN section 9), a thread beside the reconciler: ids per
    # chunk (one operation each), the most media a selection may resolve to, the media
    # deleted per second at most (so batch requests keep their latency), how long a runner's
    # lease on a job lasts unrenewed (then another runner takes the job over), how often an
    # idle runner looks for work, and the most point ids per vector-store call.
    job_runner_enabled: bool = True
    job_chunk_size: int = 500
    job_max_media: int = 10_000_000
    job_max_media_per_second: float = 20_000.0
    job_lease_seconds: float = 30.0
    job_poll_interval_seconds: float = 1.0
    job_points_per_call: int = 1_000
    # The vacuum (beside the reconciler, embedded vector store only): how often it looks,
    # the deleted share of a space's points that makes it vacuum that space, and how long a
    # deletion may wait at most, however small the share, before its vectors are vacuumed.
    vacuum_interval_seconds: float = 600.0
    vacuum_deleted_threshold: float = 0.2
    vacuum_max_age_seconds: float = 86_400.0
    # How long opening the embedded vector store waits for another process to let it go:
    # 0 refuses at once (the console script while the server runs). gunicorn.conf.py sets
    # it past graceful_timeout, so that a reload's new worker outwaits the old one.
    store_lock_wait_seconds: float = 0.0

    testing: bool = False

    def flask_config(self) -> dict[str, Any]:
        """Return the keys Flask and flask-limiter read from `app.config`, under their names."""
        return {
            "TESTING": self.testing,
            "MAX_CONTENT_LENGTH": self.max_content_length,
            "RATELIMIT_STORAGE_URI": self.ratelimit_storage_uri,
            "RATELIMIT_STRATEGY": self.ratelimit_strategy,
            "RATELIMIT_HEADERS_ENABLED": True,
            # Redis down or silent: each worker limits from memory (api/ratelimits.py).
            "RATELIMIT_IN_MEMORY_FALLBACK_ENABLED": True,
            "RATELIMIT_STORAGE_OPTIONS": self._ratelimit_storage_options(),
            # No CORS is offered, so OPTIONS answers nothing a 405 with Allow does not: it is
            # not served (and never reaches the API-key lookup or the limiter).
            "PROVIDE_AUTOMATIC_OPTIONS": False,
        }

    def _ratelimit_storage_options(self) -> dict[str, float]:
        if self.ratelimit_storage_uri.split(":", 1)[0] not in REDIS_SCHEMES:
            return {}
        timeout = self.ratelimit_storage_timeout_seconds
        return {"socket_timeout": timeout, "socket_connect_timeout": timeout}


# The test suite's defaults: no background thread, small vectors, quiet logs.
TESTING_DEFAULTS: dict[str, Any] = {
    "testing": True,
    "reconciler_enabled": False,
    "job_runner_enabled": False,
    "hd_dim": 8,
    "ld_dim": 4,
    "log_level": "WARNING",
}


@cache
def _types() -> dict[str, Any]:
    return typing.get_type_hints(Settings)


# Every variable the environment can set (deploy/compose.yaml is checked against it).
ENV_KEYS = frozenset(field.name.upper() for field in dataclasses.fields(Settings))


def _coerce(key: str, raw: Any) -> Any:
    """Turn a raw value (text from the environment, or a typed override) into the field's type."""
    kind = _types()[key.lower()]
    optional = isinstance(kind, types.UnionType) and type(None) in typing.get_args(kind)
    if optional:
        if raw is None or raw == "":
            return None
        kind = next(arg for arg in typing.get_args(kind) if arg is not type(None))
    if not isinstance(raw, str):
        if kind is float and isinstance(raw, int) and not isinstance(raw, bool):
            return float(raw)
        if not isinstance(raw, kind) or (kind is int and isinstance(raw, bool)):
            raise ConfigError(f"{key} must be of type {kind.__name__}, got {raw!r}")
        return raw
    if kind is bool:
        value = raw.strip().lower()
        if value in {"1", "true", "yes", "on"}:
            return True
        if value in {"0", "false", "no", "off"}:
            return False
        raise ConfigError(f"{key} must be true or false, got {raw!r}")
    if kind is int:
        try:
            return int(raw)
        except ValueError:
            raise ConfigError(f"{key} must be a whole number, got {raw!r}") from None
    if kind is float:
        try:
            return float(raw)
        except ValueError:
            raise ConfigError(f"{key} must be a number, got {raw!r}") from None
    return raw


def env_overlay(environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Return the settings present in the environment, typed, by variable name."""
    environ = os.environ if environ is None else environ
    return {key: _coerce(key, environ[key]) for key in ENV_KEYS if environ.get(key, "") != ""}


def load_settings(
    overrides: Mapping[str, Any] | None = None, environ: Mapping[str, str] | None = None
) -> Settings:
    """Merge the defaults, then the environment, then `overrides` (keyed by variable name).

    `TESTING: True` among the overrides starts from the test suite's defaults instead.
    """
    overrides = dict(overrides or {})
    unknown = sorted(set(overrides) - ENV_KEYS)
    if unknown:
        raise ConfigError(f"unknown setting {', '.join(unknown)}")
    values: dict[str, Any] = {}
    if overrides.get("TESTING"):
        values.update(TESTING_DEFAULTS)
    values.update({key.lower(): value for key, value in env_overlay(environ).items()})
    values.update({key.lower(): _coerce(key, value) for key, value in overrides.items()})
    if not values.get("database_url"):
        data_dir = values.get("data_dir", _DEFAULT_DATA_DIR)
        path = os.path.abspath(os.path.join(data_dir, "wickson.db"))
        values["database_url"] = f"sqlite:///{path}"
    settings = Settings(**values)
    _validate(settings)
    return settings


def _validate(settings: Settings) -> None:
    for key in ("rate_limit_default", "auth_failure_limit"):
        value = getattr(settings, key)
        try:
            parse_many(value)
        except ValueError:
            raise ConfigError(
                f"{key.upper()} must be a rate limit like '600/minute', got {value!r}"
            ) from None
    for key in (
        "hd_dim",
        "ld_dim",
        "max_batch_size",
        "port",
        "web_concurrency",
        "threads",
        "qdrant_timeout_seconds",
        "db_lock_timeout_ms",
        "db_statement_timeout_ms",
        "job_chunk_size",
        "job_max_media",
        "job_points_per_call",
    ):
        if getattr(settings, key) < 1:
            raise ConfigError(f"{key.upper()} must be at least 1, got {getattr(settings, key)}")
    for key in ("qdrant_shard_number", "qdrant_replication_factor"):
        value = getattr(settings, key)
        if value is not None and value < 1:
            raise ConfigError(f"{key.upper()} must be at least 1, got {value}")
    factor = settings.qdrant_write_consistency_factor
    if factor is not None and not 1 <= factor <= (settings.qdrant_replication_factor or 1):
        raise ConfigError(
            "QDRANT_WRITE_CONSISTENCY_FACTOR must be between 1 and QDRANT_REPLICATION_FACTOR "
            f"({settings.qdrant_replication_factor or 1}), got {factor}"
        )
    for key in ("job_max_media_per_second", "job_lease_seconds", "job_poll_interval_seconds"):
        if getattr(settings, key) <= 0:
            raise ConfigError(f"{key.upper()} must be more than 0, got {getattr(settings, key)}")
    if not 0 <= settings.api_key_cache_seconds <= 1:
        raise ConfigError(
            f"API_KEY_CACHE_SECONDS must be between 0 and 1, got {settings.api_key_cache_seconds}"
        )
    if settings.ratelimit_storage_timeout_seconds <= 0:
        raise ConfigError(
            "RATELIMIT_STORAGE_TIMEOUT_SECONDS must be more than 0, "
            f"got {settings.ratelimit_storage_timeout_seconds}"
        )
    for key in ("vacuum_interval_seconds", "vacuum_max_age_seconds"):
        if getattr(settings, key) <= 0:
            raise ConfigError(f"{key.upper()} must be more than 0, got {getattr(settings, key)}")
    if not 0 < settings.vacuum_deleted_threshold <= 1:
        raise ConfigError(
            "VACUUM_DELETED_THRESHOLD must be more than 0 and at most 1, "
            f"got {settings.vacuum_deleted_threshold}"
        )
    if settings.qdrant_write_ordering not in QDRANT_WRITE_ORDERINGS:
        raise ConfigError(
            f"QDRANT_WRITE_ORDERING must be one of {', '.join(QDRANT_WRITE_ORDERINGS)}, "
            f"got {settings.qdrant_write_ordering!r}"
        )
    if settings.log_format not in LOG_FORMATS:
        raise ConfigError(
            f"LOG_FORMAT must be one of {', '.join(LOG_FORMATS)}, got {settings.log_format!r}"
        )
