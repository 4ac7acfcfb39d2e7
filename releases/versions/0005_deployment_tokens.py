"""deployment_tokens: read-only tokens with which a serving process fetches its model

Revision ID: 0005_deployment_tokens
Revises: 0004_typed_deployments
Create Date: 2026-12-06
Release: 0.1.0

Only the SHA-256 of a token is stored; a token reads one deployment's model
(``GET /api/2.0/mlmanager/deployments/{id}/model``) while the deployment is
DEPLOYED and the token not revoked (undeploy revokes it).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005_deployment_tokens"
down_revision = "0004_typed_deployments"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "deployment_tokens",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column(
            "deployment_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("token_sha256", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["deployment_id"],
            ["deployments.id"],
            name=op.f("fk_deployment_tokens_deployment_id_deployments"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_deployment_tokens")),
        sa.UniqueConstraint("token_sha256", name=op.f("uq_deployment_tokens_token_sha256")),
    )
    op.create_index(
        op.f("ix_deployment_tokens_deployment_id"),
        "deployment_tokens",
        ["deployment_id"],
        unique=False,
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_deployment_tokens_deployment_id"), table_name="deployment_tokens")
    op.drop_table("deployment_tokens")
