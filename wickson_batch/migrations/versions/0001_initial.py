"""The schema of release 0.1.0, as `Base.metadata.create_all` made it before migrations.

Revision ID: 0001_initial
Revises:
Create Date: 2026-11-20

A database that release made has these tables and no `alembic_version`: `upgrade_schema`
stamps it at this revision instead of running it. So this must stay exactly that schema:
the same tables, columns, types, nullability, keys and index names (SQLAlchemy's defaults:
`ix_<table>_<column>` for `index=True`, an unnamed UNIQUE for `unique=True`).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001_initial"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

PENDING_ONLY = "state = 'pending'"


def upgrade() -> None:
    op.create_table(
        "api_keys",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("owner", sa.String(length=128), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=True),
        sa.Column("key_hash", sa.String(length=64), nullable=False),
        sa.Column("scopes", sa.String(length=200), nullable=False),
        sa.Column("rate_limit", sa.String(length=64), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("revoked_at", sa.DateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("key_hash"),
    )
    op.create_index("ix_api_keys_owner", "api_keys", ["owner"])

    op.create_table(
        "media",
        sa.Column("id", sa.String(length=128), nullable=False),
        sa.Column("owner", sa.String(length=128), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("title", sa.String(length=500), nullable=True),
        sa.Column("metadata", sa.JSON(), nullable=True),
        sa.Column("hd_count", sa.Integer(), nullable=False),
        sa.Column("ld_count", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(
        "ix_media_pending_created",
        "media",
        ["created_at"],
        sqlite_where=sa.text(PENDING_ONLY),
        postgresql_where=sa.text(PENDING_ONLY),
    )

    op.create_table(
        "cleanup_tasks",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("media_id", sa.String(length=128), nullable=False),
        sa.Column("operation_id", sa.String(length=64), nullable=False),
        sa.Column("hd_count", sa.Integer(), nullable=False),
        sa.Column("ld_count", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_cleanup_tasks_operation", "cleanup_tasks", ["operation_id"])
    op.create_index("ix_cleanup_tasks_due", "cleanup_tasks", ["next_attempt_at"])

    op.create_table(
        "operations",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("owner", sa.String(length=128), nullable=False),
        sa.Column("api_key_id", sa.Integer(), nullable=True),
        sa.Column("reason", sa.String(length=500), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("requested", sa.Integer(), nullable=False),
        sa.Column("deleted", sa.Integer(), nullable=False),
        sa.Column("failed", sa.Integer(), nullable=False),
        sa.Column("result", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_operations_owner", "operations", ["owner"])

    op.create_table(
        "idempotency_keys",
        sa.Column("api_key_id", sa.Integer(), nullable=False),
        sa.Column("key", sa.String(length=255), nullable=False),
        sa.Column("request_hash", sa.String(length=64), nullable=False),
        sa.Column("operation_id", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("api_key_id", "key"),
    )
    op.create_index("ix_idempotency_keys_created", "idempotency_keys", ["created_at"])


def downgrade() -> None:
    op.drop_index("ix_idempotency_keys_created", table_name="idempotency_keys")
    op.drop_table("idempotency_keys")
    op.drop_index("ix_operations_owner", table_name="operations")
    op.drop_table("operations")
    op.drop_index("ix_cleanup_tasks_due", table_name="cleanup_tasks")
    op.drop_index("ix_cleanup_tasks_operation", table_name="cleanup_tasks")
    op.drop_table("cleanup_tasks")
    op.drop_index("ix_media_pending_created", table_name="media")
    op.drop_table("media")
    op.drop_index("ix_api_keys_owner", table_name="api_keys")
    op.drop_table("api_keys")
