"""deployments: typed spec apart from runtime stats

Revision ID: 0004_typed_deployments
Revises: 0003_model_representations
Create Date: 2026-12-06
Release: 0.1.0

The untyped ``details`` becomes ``spec`` (the target's desired state, read
through ``shared.deployments.DeploymentSpec``); what the async scorer measured
(``scoring_lag``, ``scoring_errors``, ``last_scoring_error``) moves to
``stats``, and the undeploy job that retired a record to ``undeployed_by_job``.
The move is SQL (no Python), so the rendered release scripts carry it too.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0004_typed_deployments"
down_revision = "0003_model_representations"
branch_labels = None
depends_on = None

_JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")
_STATS_KEYS = ("scoring_lag", "scoring_errors", "last_scoring_error")


def upgrade() -> None:
    # A plain RENAME COLUMN (PostgreSQL, SQLite >= 3.25): a batch copy of the table
    # could not be rendered offline.
    op.execute("ALTER TABLE deployments RENAME COLUMN details TO spec")
    op.add_column("deployments", sa.Column("stats", _JSON, nullable=True))
    op.add_column("deployments", sa.Column("undeployed_by_job", sa.BigInteger(), nullable=True))
    keys = ", ".join(f"'{k}'" for k in _STATS_KEYS)
    if op.get_context().dialect.name == "postgresql":
        removed = "".join(f" - '{k}'" for k in (*_STATS_KEYS, "undeployed_by_job"))
        op.execute(
            "UPDATE deployments SET "
            "stats = (SELECT jsonb_object_agg(key, value) FROM jsonb_each(spec) "
            f"WHERE key IN ({keys})), "
            "undeployed_by_job = CAST(spec->>'undeployed_by_job' AS bigint), "
            f"spec = spec{removed}"
        )
    else:
        removed = ", ".join(f"'$.{k}'" for k in (*_STATS_KEYS, "undeployed_by_job"))
        op.execute(
            "UPDATE deployments SET "
            "stats = (SELECT json_group_object(key, value) FROM json_each(deployments.spec) "
            f"WHERE key IN ({keys}) HAVING count(*) > 0), "
            "undeployed_by_job = json_extract(spec, '$.undeployed_by_job'), "
            f"spec = json_remove(spec, {removed})"
        )


def downgrade() -> None:
    if op.get_context().dialect.name == "postgresql":
        op.execute(
            "UPDATE deployments SET spec = spec || coalesce(stats, '{}'::jsonb) || "
            "CASE WHEN undeployed_by_job IS NULL THEN '{}'::jsonb "
            "ELSE jsonb_build_object('undeployed_by_job', undeployed_by_job) END"
        )
    else:
        op.execute(
            "UPDATE deployments SET spec = json_patch(json_patch(spec, coalesce(stats, '{}')), "
            "CASE WHEN undeployed_by_job IS NULL THEN '{}' "
            "ELSE json_object('undeployed_by_job', undeployed_by_job) END)"
        )
    with op.batch_alter_table("deployments") as batch_op:
        batch_op.drop_column("undeployed_by_job")
        batch_op.drop_column("stats")
    op.execute("ALTER TABLE deployments RENAME COLUMN spec TO details")
