"""wickson-batch: batch deletion of media and their vectors."""

from __future__ import annotations

import atexit
from collections.abc import Mapping
from typing import Any

from flask import Flask, Response
from werkzeug.middleware.proxy_fix import ProxyFix

from .config import Config, TestingConfig, load_settings
from .logging import configure_logging


def _security_headers(response: Response) -> Response:
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Cache-Control"] = "no-store"
    return response


def create_app(config: Mapping[str, Any] | None = None) -> Flask:
    """Build the app: settings (defaults < environment < `config`), logging, stores, routes."""
    base = TestingConfig if config and config.get("TESTING") else Config
    settings = load_settings(base, config)
    configure_logging(settings["LOG_LEVEL"], settings["LOG_FORMAT"])

    from . import errors, limits, logging, metrics
    from .api import docs, health, media, openapi, operations
    from .stores import Stores

    app = Flask(__name__, static_folder=None)
    app.config.from_mapping(settings)
    app.json.sort_keys = False  # type: ignore[attr-defined]
    if settings["TRUSTED_PROXY_HOPS"] > 0:
        # The client address (rate limits, failed authentications) comes from the proxies.
        hops = settings["TRUSTED_PROXY_HOPS"]
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=hops, x_proto=hops)  # type: ignore[method-assign]

    logging.init_app(app)
    metrics.init_app(app)  # before the limiter, so that a refused request is timed too
    errors.register_handlers(app)
    app.after_request(_security_headers)
    limiter = limits.init_app(app)
    app.extensions["wickson_limiter"] = limiter
    app.register_blueprint(media.bp)
    app.register_blueprint(operations.bp)
    app.register_blueprint(health.bp)
    app.register_blueprint(openapi.bp)
    limiter.exempt(health.bp)
    limiter.exempt(openapi.bp)
    app.register_blueprint(docs.bp)
    limiter.exempt(docs.bp)
    limiter.exempt(metrics.bp)

    held = Stores.open(settings)
    app.extensions["wickson"] = held
    if settings["RECONCILER_ENABLED"]:
        held.start_reconciler(settings)
        atexit.register(held.close)
    return app
