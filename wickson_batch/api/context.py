"""What a request's code reaches through the current app: its settings and its stores."""

from __future__ import annotations

from flask import current_app

from ..config import Settings
from ..services.stores import Stores

SETTINGS_EXTENSION = "wickson_settings"
STORES_EXTENSION = "wickson"


def settings() -> Settings:
    """Return the settings the current app was built with."""
    found: Settings = current_app.extensions[SETTINGS_EXTENSION]
    return found


def stores() -> Stores:
    """Return the stores of the current app."""
    found: Stores = current_app.extensions[STORES_EXTENSION]
    return found
