"""Background deletion jobs: the jobs and their manifests (DESIGN section 9).

Revision ID: 0003_deletion_jobs
Revises: 0002_media_listing
Create Date: 2026-12-01

Two new tables; no existing table changes.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003_deletion_jobs"
down_revision: str | Sequence[str] | None = "0002_media_listing"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "deletion_job_items",
        sa.Column("job_id", sa.String(length=64), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("media_id", sa.String(length=128), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("reason", sa.String(length=64), nullable=True),
        sa.Column("operation_id", sa.String(length=64), nullable=True),
        sa.PrimaryKeyConstraint("job_id", "position"),
    )
    op.create_index(
        "ix_deletion_job_items_status", "deletion_job_items", ["job_id", "status", "position"]
    )

    op.create_table(
        "deletion_jobs",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("owner", sa.String(length=128), nullable=False),
        sa.Column("api_key_id", sa.Integer(), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("selection", sa.JSON(), nullable=False),
        sa.Column("reason", sa.String(length=500), nullable=True),
        sa.Column("cascade", sa.Boolean(), nullable=False),
        sa.Column("total", sa.Integer(), nullable=True),
        sa.Column("deleted", sa.Integer(), nullable=False),
        sa.Column("failed", sa.Integer(), nullable=False),
        sa.Column("hd_vectors", sa.Integer(), nullable=False),
        sa.Column("ld_vectors", sa.Integer(), nullable=False),
        sa.Column("error_code", sa.String(length=64), nullable=True),
        sa.Column("error_message", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.Column("finished_at", sa.DateTime(), nullable=True),
        sa.Column("cancel_requested", sa.Boolean(), nullable=False),
        sa.Column("lease_holder", sa.String(length=128), nullable=True),
        sa.Column("lease_expires_at", sa.DateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(
        "ix_deletion_jobs_owner_created", "deletion_jobs", ["owner", "created_at", "id"]
    )
    op.create_index("ix_deletion_jobs_status_created", "deletion_jobs", ["status", "created_at"])


def downgrade() -> None:
    op.drop_index("ix_deletion_jobs_status_created", table_name="deletion_jobs")
    op.drop_index("ix_deletion_jobs_owner_created", table_name="deletion_jobs")
    op.drop_table("deletion_jobs")
    op.drop_index("ix_deletion_job_items_status", table_name="deletion_job_items")
    op.drop_table("deletion_job_items")
