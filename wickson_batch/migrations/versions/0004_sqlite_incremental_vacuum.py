"""SQLite gives deleted rows' pages back: auto_vacuum = INCREMENTAL.

Revision ID: 0004_sqlite_incremental_vacuum
Revises: 0003_deletion_jobs
Create Date: 2026-12-01

Without auto-vacuum a SQLite file never shrinks: the pages of deleted rows go to its free
list and stay in the file. In INCREMENTAL mode the server hands them back with `PRAGMA
incremental_vacuum` (beside the vector vacuum, services/vacuum.py). The mode of a database
that holds tables changes only with a VACUUM, which rewrites the whole file and cannot run
inside a transaction: it runs once the migration's transaction has committed (needing free
disk space about the size of the file, for a moment). No table is touched, so the revision
stands apart from every other. PostgreSQL gives pages back with its own autovacuum: nothing
to do there.
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

from wickson_batch.db import outside_transaction

revision: str = "0004_sqlite_incremental_vacuum"
down_revision: str | Sequence[str] | None = "0003_deletion_jobs"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _set_auto_vacuum(mode: str) -> None:
    connection = op.get_bind()
    if connection.dialect.name != "sqlite":
        return
    outside_transaction(connection, f"PRAGMA auto_vacuum = {mode}", "VACUUM")


def upgrade() -> None:
    _set_auto_vacuum("INCREMENTAL")


def downgrade() -> None:
    _set_auto_vacuum("NONE")
