"""The media listing and selections: `media.parent_id`, and the listing's index per owner.

Revision ID: 0002_media_listing
Revises: 0001_initial
Create Date: 2026-12-01

`parent_id` is nullable and starts NULL on every existing row (section 10 sets it when a
derived media is created). `ix_media_owner_created` serves `GET /v1/media`: one owner's
media in (created_at, id) order, a page at a time. Both are plain ALTER TABLE ADD COLUMN
and CREATE INDEX on SQLite too: the table is not rebuilt.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002_media_listing"
down_revision: str | Sequence[str] | None = "0001_initial"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("media", sa.Column("parent_id", sa.String(length=128), nullable=True))
    op.create_index("ix_media_parent_id", "media", ["parent_id"])
    op.create_index("ix_media_owner_created", "media", ["owner", "created_at", "id"])


def downgrade() -> None:
    op.drop_index("ix_media_owner_created", table_name="media")
    op.drop_index("ix_media_parent_id", table_name="media")
    with op.batch_alter_table("media") as batch_op:
        batch_op.drop_column("parent_id")
