"""The web layer: authentication, rate limits, the error envelope, schemas and blueprints."""

from __future__ import annotations

from flask import Flask, Response
from werkzeug.middleware.proxy_fix import ProxyFix

from .. import logs
from ..config import Settings
from ..services.stores import Stores
from . import auth, docs, errors, health, jobs, media, metrics, openapi, operations, ratelimits
from .context import SETTINGS_EXTENSION, STORES_EXTENSION

__all__ = ["build_api"]


def _security_headers(response: Response) -> Response:
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Cache-Control"] = "no-store"
    return response


def build_api(settings: Settings, held: Stores) -> Flask:
    """Return the Flask app serving the API over `held`, configured by `settings`."""
    app = Flask("wickson_batch", static_folder=None)
    app.config.from_mapping(settings.flask_config())
    app.extensions[SETTINGS_EXTENSION] = settings
    app.extensions[STORES_EXTENSION] = held
    app.json.sort_keys = False  # type: ignore[attr-defined]
    if settings.trusted_proxy_hops > 0:
        # The client address (rate limits, failed authentications) comes from the proxies.
        hops = settings.trusted_proxy_hops
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=hops, x_proto=hops)  # type: ignore[method-assign]

    auth.init_key_cache(app, settings.api_key_cache_seconds)
    logs.init_app(app)
    # Before the limiter, so that a refused request is timed too.
    metrics.init_app(app, settings, held)
    errors.register_handlers(app)
    app.after_request(_security_headers)
    limiter = ratelimits.init_app(app)
    # No redirect built from the caller's Host header: `/v1//media/batch` is a 404 in the
    # envelope, never a 308 (set before any rule is added: rules read it when bound). No rule
    # ends in a slash, so strict slashes never redirect either: `/v1/media/batch/` is a 404.
    app.url_map.merge_slashes = False
    app.url_map.converters["media_id"] = media.MediaIdConverter
    app.register_blueprint(media.bp)
    app.register_blueprint(operations.bp)
    app.register_blueprint(jobs.bp)
    for unlimited in (health.bp, openapi.bp, docs.bp):
        app.register_blueprint(unlimited)
        limiter.exempt(unlimited)
    limiter.exempt(metrics.bp)
    return app
