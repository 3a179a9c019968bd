"""Alembic's environment: run the migrations on the connection the application hands in.

There is no alembic.ini: `wickson_batch.db.alembic_config` builds the configuration in code
and puts an open connection in `config.attributes["connection"]`, so the migrations run on
the application's own engine (its SQLite pragmas, its PostgreSQL search_path) under the lock
the caller holds.
"""

from __future__ import annotations

from typing import Any, Literal

from alembic import context
from alembic.autogenerate.api import AutogenContext
from sqlalchemy.engine import Connection

from wickson_batch.models import Base, UtcDateTime


def render_item(type_: str, obj: Any, autogen_context: AutogenContext) -> str | Literal[False]:
    """Render the models' UtcDateTime as the plain DateTime it stores, so that a revision
    never imports the models (they change; a revision must not)."""
    if type_ == "type" and isinstance(obj, UtcDateTime):
        return "sa.DateTime()"
    return False


def run() -> None:
    connection = context.config.attributes.get("connection")
    if not isinstance(connection, Connection):
        raise RuntimeError(
            "the migrations run through wickson-batch (`wickson-batch db upgrade`), "
            "which hands them a connection; offline (SQL script) mode is not supported"
        )
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        # SQLite cannot ALTER most things: autogenerate writes batch (copy-and-move) operations.
        render_as_batch=True,
        render_item=render_item,
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


run()
