"""wickson-batch: batch deletion of media and their vectors.

Importing the package builds nothing and pulls in no web framework (the client package
lives below it): `create_app` imports what the server needs when it is called.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from flask import Flask

__all__ = ["create_app"]


def create_app(config: Mapping[str, Any] | None = None) -> Flask:
    """Build the app: settings (defaults < environment < `config`), logging, stores, routes."""
    from .config import load_settings
    from .logs import configure_logging

    settings = load_settings(config)
    configure_logging(settings.log_level, settings.log_format)

    from .api import build_api
    from .services.stores import Stores

    held = Stores.open(settings)
    try:
        app = build_api(settings, held)
    except BaseException:
        held.close()
        raise
    if settings.reconciler_enabled:
        held.start_reconciler(settings)
    if settings.job_runner_enabled:
        held.start_job_runner(settings)
    if settings.reconciler_enabled or settings.job_runner_enabled:
        import atexit

        atexit.register(held.close)
    return app
