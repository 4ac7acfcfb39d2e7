"""artifacts: MLflow artifacts stored in the database, in chunks

Revision ID: 0006_artifacts
Revises: 0005_deployment_tokens
Create Date: 2026-12-06
Release: 0.1.0

``artifact_files`` holds one row per published file (path, size, sha256, mtime);
``artifact_chunks`` its bytes. See ``shared.artifacts``.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006_artifacts"
down_revision = "0005_deployment_tokens"
branch_labels = None
depends_on = None

# Byte-wise order on PostgreSQL too, whatever the database's locale (folder listings are
# range scans); SQLite's default collation is already byte-wise.
_PATH = sa.String(length=1024).with_variant(sa.String(length=1024, collation="C"), "postgresql")


def upgrade() -> None:
    op.create_table(
        "artifact_files",
        sa.Column("path", _PATH, nullable=False),
        sa.Column("blob_id", sa.String(length=32), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("chunks", sa.Integer(), nullable=False),
        sa.Column("mtime", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("path", name=op.f("pk_artifact_files")),
        sa.UniqueConstraint("blob_id", name=op.f("uq_artifact_files_blob_id")),
    )
    op.create_table(
        "artifact_chunks",
        sa.Column("blob_id", sa.String(length=32), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("data", sa.LargeBinary(), nullable=False),
        sa.Column("written_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("blob_id", "seq", name=op.f("pk_artifact_chunks")),
    )
    op.create_index(
        op.f("ix_artifact_chunks_written_at"), "artifact_chunks", ["written_at"], unique=False
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_artifact_chunks_written_at"), table_name="artifact_chunks")
    op.drop_table("artifact_chunks")
    op.drop_table("artifact_files")
