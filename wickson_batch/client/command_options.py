"""The options every command of the client takes to reach the service."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import click

F = TypeVar("F", bound=Callable[..., Any])

API_KEY_ENVVAR = "WICKSON_API_KEY"


def url_option(command: F) -> F:
    """`--url`: the service's base URL."""
    return click.option(
        "--url", required=True, help="The service's base URL, e.g. http://127.0.0.1:8000."
    )(command)


def api_key_option(scope: str) -> Callable[[F], F]:
    """`--api-key`, or WICKSON_API_KEY: a key holding `scope`."""
    return click.option(
        "--api-key",
        envvar=API_KEY_ENVVAR,
        show_envvar=True,
        required=True,
        help=f"A key with the {scope} scope.",
    )
