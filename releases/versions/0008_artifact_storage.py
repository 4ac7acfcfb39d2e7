"""artifact_storage: artifact chunks stored uncompressed on PostgreSQL (STORAGE EXTERNAL)

Revision ID: 0008_artifact_storage
Revises: 0007_schedules
Create Date: 2026-12-06
Release: 0.1.0

PostgreSQL's default (EXTENDED) tries pglz on every 1 MiB chunk: measured
(tests/bench/artifact_writes.py, fsync on) at 11 MB/s for compressible bytes against 60
with EXTERNAL, and 53 against 79 MB/s for random ones. Applies to chunks written from
now on; the ones stored before stay as they are (both read the same). SQLite has no
such setting.
"""

from __future__ import annotations

from alembic import op

revision = "0008_artifact_storage"
down_revision = "0007_schedules"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if op.get_context().dialect.name == "postgresql":
        op.execute("ALTER TABLE artifact_chunks ALTER COLUMN data SET STORAGE EXTERNAL")


def downgrade() -> None:
    if op.get_context().dialect.name == "postgresql":
        op.execute("ALTER TABLE artifact_chunks ALTER COLUMN data SET STORAGE EXTENDED")
