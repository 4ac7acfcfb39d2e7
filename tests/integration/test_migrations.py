"""Migrations: an empty database upgrades to exactly the ORM (no drift), on both dialects."""

from __future__ import annotations

import json

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect, text

from shared.db import schema_of
from shared.deployments import DatabaseDeploymentSpec, DeploymentStats, DeploymentStore
from shared.errors import SchemaOutdated
from shared.migrations import VERSION_TABLE, head_revision, include_object, require_current, upgrade
from shared.models import Base
from tests.support.engines import EngineFor


def test_empty_database_upgrades_to_the_orm_without_drift(
    db_url: str, engine_for: EngineFor
) -> None:
    engine = engine_for(db_url)
    with pytest.raises(SchemaOutdated, match="mlmanager db upgrade"):
        require_current(engine)

    assert upgrade(engine) == head_revision()
    require_current(engine)

    with engine.connect() as conn:
        ctx = MigrationContext.configure(
            conn,
            opts={
                "version_table": VERSION_TABLE,
                "version_table_schema": schema_of(engine),
                "include_object": include_object,
                "compare_type": True,
                "compare_server_default": True,
            },
        )
        diff = compare_metadata(ctx, Base.metadata)
    assert diff == []
    names = set(inspect(engine).get_table_names(schema=schema_of(engine)))
    assert {"handlers", "jobs", "job_logs", "deployments", VERSION_TABLE} <= names
    # Upgrading again is a no-op.
    assert upgrade(engine) == head_revision()


@pytest.mark.postgres
def test_our_tables_live_in_their_own_schema_beside_mlflow_tables(
    pg_url: str, engine_for: EngineFor
) -> None:
    """MLflow also has a `jobs` table; ours must not collide with it in one database."""
    engine = engine_for(pg_url)
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE public.jobs (id int primary key, mlflow_col text)"))
        conn.execute(text("CREATE TABLE public.alembic_version (version_num varchar(32))"))
        conn.execute(text("INSERT INTO public.alembic_version VALUES ('mlflow-rev')"))
    upgrade(engine)
    require_current(engine)
    assert "status" in {c["name"] for c in inspect(engine).get_columns("jobs", schema="mlmanager")}
    assert "mlflow_col" in {c["name"] for c in inspect(engine).get_columns("jobs", schema="public")}
    with engine.connect() as conn:
        assert conn.execute(text("SELECT version_num FROM public.alembic_version")).scalar() == (
            "mlflow-rev"
        )


def test_unknown_newer_revision_is_refused(sqlite_url: str, engine_for: EngineFor) -> None:
    engine = engine_for(sqlite_url)
    upgrade(engine)
    with engine.begin() as conn:
        conn.execute(text(f"UPDATE {VERSION_TABLE} SET version_num = '9999_future'"))
    with pytest.raises(SchemaOutdated, match="does not know"):
        require_current(engine)


def test_an_old_details_row_is_split_into_typed_spec_and_stats(
    db_url: str, engine_for: EngineFor
) -> None:
    """0004 moves a deployment recorded before it (one untyped ``details``) into its typed
    spec, its runtime stats and the undeploy job that retired it."""
    engine = engine_for(db_url)
    upgrade(engine, "0003_model_representations")
    old = {
        "db_schema": "ml",
        "db_table": "iris",
        "representation_id": 7,
        "format": "onnx",
        "kind": "classification",
        "trigger": "RUNMODEL_iris_abc",
        "trigger_mode": "async",
        "mode": "async",
        "keys": [["id", "BIGINT"]],
        "features": ["a", "b"],
        "prediction_columns": ["prediction"],
        "created_table": True,
        "scoring_lag": {"rows": 3, "p50_ms": 1.5, "p99_ms": 9.0},
        "scoring_errors": 2,
        "last_scoring_error": "bad row",
        "undeployed_by_job": 42,
    }
    plain = {**old, "db_table": "plain", "mode": "sync", "trigger_mode": "row"}
    for key in ("scoring_lag", "scoring_errors", "last_scoring_error", "undeployed_by_job"):
        del plain[key]
    with engine.begin() as conn:
        for name, details, status in (("ml.iris", old, "DELETED"), ("ml.plain", plain, "DEPLOYED")):
            conn.execute(
                text(
                    "INSERT INTO deployments (target, name, status, details, username, "
                    "created_at, updated_at) VALUES ('database', :name, :status, :details, "
                    "'ann', CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"
                ),
                {"name": name, "status": status, "details": json.dumps(details)},
            )

    upgrade(engine)

    store = DeploymentStore(engine)
    moved, untouched = sorted(store.list(limit=10), key=lambda d: d.name)
    assert isinstance(moved.spec, DatabaseDeploymentSpec)
    assert (moved.spec.db_table, moved.spec.keys, moved.spec.mode) == (
        "iris",
        [("id", "BIGINT")],
        "async",
    )
    assert moved.stats.scoring_errors == 2 and moved.stats.last_scoring_error == "bad row"
    assert moved.stats.scoring_lag is not None and moved.stats.scoring_lag.p99_ms == 9.0
    assert moved.undeployed_by_job == 42
    # Old clients read the same JSON as before (plus the batch size and the input-column
    # map, recorded since).
    assert moved.details == {**old, "max_batch_size": 10000, "input_columns": {}}
    assert untouched.spec is not None and untouched.spec.trigger_mode == "row"
    assert untouched.stats == DeploymentStats() and untouched.undeployed_by_job is None
    with engine.connect() as conn:
        stored = conn.execute(text("SELECT spec FROM deployments WHERE name = 'ml.iris'"))
        spec = stored.scalar_one()
    spec = json.loads(spec) if isinstance(spec, str) else spec
    assert "scoring_errors" not in spec and "undeployed_by_job" not in spec
