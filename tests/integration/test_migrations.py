"""Migrations: an empty database upgrades to exactly the ORM (no drift), on both dialects."""

from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect, text

from shared.db import schema_of
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
