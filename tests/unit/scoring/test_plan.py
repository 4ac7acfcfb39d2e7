"""The deployment planner is a pure function of the catalog: its SQL, without a database.

Each test builds the catalog a reader would return (``shared.scoring.catalog``) and
asserts the rendered SQL of both dialects, the sync/async decision and the undeploy plan.
"""

from __future__ import annotations

from typing import Any

import pytest

from shared.errors import (
    DeploymentConflict,
    InvalidPayload,
    NotAuthorized,
    NotFound,
    TargetUnavailable,
)
from shared.handlers import DeployDatabasePayload
from shared.scoring.catalog import Catalog, ScoringFunctions, TableInfo
from shared.scoring.kinds import Column, ModelKind, SqlType, output_columns
from shared.scoring.plan import DeploymentPlan, plan_deployment, plan_undeploy
from shared.scoring.postgres import scoring_version
from shared.scoring.representation import Representation, RepresentationFormat

RUN = "0123456789abcdef"
REP = Representation(
    format=RepresentationFormat.ONNX,
    payload=b"onnx",
    inputs=(Column("age", SqlType.DOUBLE), Column("mean radius", SqlType.DOUBLE)),
    outputs=output_columns(ModelKind.CLASSIFICATION, ("no", "yes"), ("no", "yes")),
    kind=ModelKind.CLASSIFICATION,
    classes=("no", "yes"),
    method="predict",
    flavor="sklearn",
    model_uri="models:/m-1",
    run_id=RUN,
)
INSTALLED = ScoringFunctions(scoring_version(), plpython=True, superuser=False)
EXISTING = TableInfo({"id": "BIGINT", "age": "DOUBLE PRECISION", "mean_radius": "REAL"}, ("id",))


def payload(**extra: Any) -> DeployDatabasePayload:
    fields = {"model_uri": "models:/m-1", "db_schema": "apps", "db_table": "loans"}
    return DeployDatabasePayload.model_validate(fields | extra)


def new_table(dialect: str, scoring: ScoringFunctions | None = INSTALLED) -> Catalog:
    return Catalog(
        dialect,
        schema_exists=dialect == "sqlite",
        table=None,
        scoring=scoring if dialect == "postgresql" else None,
    )


def plan(catalog: Catalog, rep_id: int | None = 7, **extra: Any) -> DeploymentPlan:
    fields = {"create_model_table": True, "primary_key": {"id": "BIGINT"}} | extra
    if catalog.dialect == "sqlite":
        fields.setdefault("db_schema", "main")
    return plan_deployment(catalog, payload(**fields), REP, rep_id, scoring_schema="mlmanager")


def test_sqlite_new_table_plan_creates_the_table_and_a_row_trigger_calling_the_function() -> None:
    rendered = plan(new_table("sqlite")).render()

    assert rendered == (
        "-- model input 'mean radius' is read from column mean_radius\n"
        "-- Step 1: create table main.loans\n"
        'CREATE TABLE "loans" (\n'
        '  "id" BIGINT,\n  "age" REAL,\n  "mean_radius" REAL,\n'
        '  "CUR_USER" TEXT,\n  "EVAL_TIME" TEXT DEFAULT CURRENT_TIMESTAMP,\n'
        f"  \"RUN_ID\" TEXT DEFAULT '{RUN}',\n"
        '  "PREDICTION" TEXT,\n  "no" REAL,\n  "yes" REAL,\n  PRIMARY KEY ("id")\n);\n'
        "-- Step 2: create the row scoring trigger RUNMODEL_loans_01234567\n"
        'CREATE TRIGGER "RUNMODEL_loans_01234567" AFTER INSERT ON "loans" FOR EACH ROW BEGIN '
        'UPDATE "loans" SET ("PREDICTION", "no", "yes") = (SELECT json_extract(s, \'$[0]\'), '
        "json_extract(s, '$[1]'), json_extract(s, '$[2]') FROM (SELECT "
        'mlmanager_score(7, NEW."age", NEW."mean_radius") AS s)), '
        '"EVAL_TIME" = coalesce(NEW."EVAL_TIME", CURRENT_TIMESTAMP), '
        f'"RUN_ID" = \'{RUN}\' WHERE "id" = NEW."id"; END;'
    )


def test_postgresql_new_table_plan_creates_schema_table_and_statement_trigger() -> None:
    built = plan(new_table("postgresql"))

    assert built.setup == [] and not built.asynchronous  # the functions are installed
    assert [s.description for s in built.steps] == [
        "create schema apps",
        "create table apps.loans",
        "create the statement scoring trigger RUNMODEL_loans_01234567",
    ]
    schema, table, trigger = (s.sql for s in built.steps)
    assert schema == 'CREATE SCHEMA IF NOT EXISTS "apps"'
    assert table == (
        'CREATE TABLE "apps"."loans" (\n'
        '  "id" BIGINT,\n  "age" double precision,\n  "mean_radius" double precision,\n'
        '  "cur_user" text DEFAULT current_user,\n'
        '  "eval_time" timestamp with time zone DEFAULT CURRENT_TIMESTAMP,\n'
        f"  \"run_id\" text DEFAULT '{RUN}',\n"
        '  "prediction" text,\n  "no" double precision,\n  "yes" double precision,\n'
        '  PRIMARY KEY ("id")\n) WITH (fillfactor = 50)'
    )
    binding = (
        '{"representation_id":7,"keys":[["id","BIGINT"]],"features":["age","mean_radius"],'
        '"outputs":["prediction","no","yes"],"max_batch_size":10000}'
    )
    assert trigger == (
        'CREATE TRIGGER "RUNMODEL_loans_01234567" AFTER INSERT ON "apps"."loans" '
        "REFERENCING NEW TABLE AS mlmanager_new_rows FOR EACH STATEMENT "
        f"EXECUTE FUNCTION \"mlmanager\".score_statement('{binding}')"
    )


def test_postgresql_row_trigger_scores_before_the_row_is_written() -> None:
    trigger = plan(new_table("postgresql"), trigger_mode="row").steps[-1].sql

    assert trigger is not None
    assert trigger.startswith(
        'CREATE TRIGGER "RUNMODEL_loans_01234567" BEFORE INSERT ON "apps"."loans" FOR EACH ROW '
        'EXECUTE FUNCTION "mlmanager".score_row(\'{"representation_id":7,'
    )


def test_missing_functions_are_installed_by_the_plan_with_the_workers_rights() -> None:
    superuser = ScoringFunctions(None, plpython=True, superuser=True)

    built = plan(new_table("postgresql", superuser))
    rendered = built.render()

    assert not built.asynchronous
    assert built.setup[0].sql == (
        "SELECT pg_advisory_xact_lock(hashtext('mlmanager.scoring_install'))"
    )
    installs = [s.sql or "" for s in built.setup[1:]]
    assert installs[0] == "CREATE EXTENSION IF NOT EXISTS plpython3u"
    assert any(
        sql.startswith('CREATE OR REPLACE FUNCTION "mlmanager".score_statement()')
        for sql in installs
    )
    assert "-- installing the PL/Python scoring functions in mlmanager" in rendered
    assert (
        "-- Step 2: install the PL/Python scoring functions in mlmanager (with the worker's rights)"
        in rendered
    )
    # The embedded scoring code is shown by its size, not printed.
    assert (
        'CREATE OR REPLACE FUNCTION "mlmanager".scoring_load() RETURNS void '
        "LANGUAGE plpython3u AS ... ;" in rendered
    )
    assert "class _Embedded" not in rendered


@pytest.mark.parametrize(
    ("scoring", "reason"),
    [
        (ScoringFunctions(None, plpython=False, superuser=True), "has no PL/Python"),
        (ScoringFunctions("old", plpython=True, superuser=False), "needs a PostgreSQL superuser"),
    ],
)
def test_auto_mode_falls_back_to_async_and_says_why_and_sync_is_refused(
    scoring: ScoringFunctions, reason: str
) -> None:
    built = plan(new_table("postgresql", scoring))

    assert built.asynchronous and built.trigger_mode == "async"
    assert len(built.notes) == 1 and built.notes[0].startswith("scoring asynchronously")
    assert reason in built.notes[0]
    [notify] = built.setup
    assert notify.sql == (
        'CREATE OR REPLACE FUNCTION "mlmanager".notify_inserted() RETURNS trigger '
        "LANGUAGE plpgsql AS $$ BEGIN PERFORM pg_notify('mlmanager_scoring', TG_RELID::text); "
        "RETURN NULL; END $$"
    )
    index, trigger = (s.sql for s in built.steps[-2:])
    assert index == (
        'CREATE INDEX IF NOT EXISTS "mlmanager_unscored_loans" ON "apps"."loans" ("id") '
        'WHERE "prediction" IS NULL'
    )
    assert trigger == (
        'CREATE TRIGGER "RUNMODEL_loans_01234567" AFTER INSERT ON "apps"."loans" '
        'FOR EACH STATEMENT EXECUTE FUNCTION "mlmanager".notify_inserted()'
    )
    refused = TargetUnavailable if not scoring.plpython else NotAuthorized
    with pytest.raises(refused, match=reason):
        plan(new_table("postgresql", scoring), mode="sync")


def test_async_is_asked_for_anywhere_on_postgresql_and_refused_on_sqlite() -> None:
    assert plan(new_table("postgresql"), mode="async").asynchronous
    with pytest.raises(InvalidPayload, match="mode async needs PostgreSQL"):
        plan(new_table("sqlite"), mode="async")


def test_a_dry_run_plans_the_same_steps_as_the_real_run() -> None:
    for scoring in (INSTALLED, ScoringFunctions(None, plpython=False, superuser=False)):
        dry, real = (
            plan(new_table("postgresql", scoring), None),
            plan(new_table("postgresql", scoring), 7),
        )

        assert dry.trigger_mode == real.trigger_mode
        assert [s.description for s in [*dry.setup, *dry.steps]] == [
            s.description for s in [*real.setup, *real.steps]
        ]
        assert [s.sql for s in dry.setup] == [s.sql for s in real.setup]


@pytest.mark.parametrize("dialect", ["sqlite", "postgresql"])
def test_replacing_a_model_drops_its_trigger_and_adds_the_missing_columns(dialect: str) -> None:
    schema = "main" if dialect == "sqlite" else "apps"
    table = TableInfo(EXISTING.columns, ("id",), ("RUNMODEL_loans_old",))
    catalog = Catalog(dialect, True, table, scoring=INSTALLED if dialect == "postgresql" else None)
    fields = {"db_schema": schema}

    with pytest.raises(DeploymentConflict, match="RUNMODEL_loans_old"):
        plan_deployment(catalog, payload(**fields), REP, 7, scoring_schema="mlmanager")
    built = plan_deployment(catalog, payload(**fields, replace=True), REP, 7, scoring_schema=None)

    sql = [s.sql for s in built.steps]
    if dialect == "sqlite":
        assert sql[:5] == [
            'DROP TRIGGER "RUNMODEL_loans_old"',
            'ALTER TABLE "loans" ADD COLUMN "CUR_USER" TEXT',
            'ALTER TABLE "loans" ADD COLUMN "EVAL_TIME" TEXT',
            f'ALTER TABLE "loans" ADD COLUMN "RUN_ID" TEXT DEFAULT \'{RUN}\'',
            'ALTER TABLE "loans" ADD COLUMN "PREDICTION" TEXT',
        ]
    else:
        assert sql[:5] == [
            'DROP TRIGGER "RUNMODEL_loans_old" ON "apps"."loans"',
            'ALTER TABLE "apps"."loans" ADD COLUMN "cur_user" text DEFAULT current_user',
            'ALTER TABLE "apps"."loans" ADD COLUMN "eval_time" timestamp with time zone '
            "DEFAULT CURRENT_TIMESTAMP",
            f'ALTER TABLE "apps"."loans" ADD COLUMN "run_id" text DEFAULT \'{RUN}\'',
            'ALTER TABLE "apps"."loans" ADD COLUMN "prediction" text',
        ]
    assert built.replaces == ("RUNMODEL_loans_old",) and not built.creates_table


def test_a_missing_table_without_create_model_table_and_a_keyless_table_are_refused() -> None:
    with pytest.raises(InvalidPayload, match="no primary key"):
        plan_deployment(
            Catalog("sqlite", True, TableInfo({"age": "REAL"}, ())),
            payload(db_schema="main"),
            REP,
            7,
            scoring_schema=None,
        )
    with pytest.raises(NotFound, match="does not exist"):
        plan_deployment(new_table("sqlite"), payload(db_schema="main"), REP, 7, scoring_schema=None)


@pytest.mark.parametrize("dialect", ["sqlite", "postgresql"])
def test_the_undeploy_plan_drops_triggers_index_and_asked_columns(dialect: str) -> None:
    table = TableInfo(
        {**EXISTING.columns, "prediction": "TEXT", "no": "REAL"}, ("id",), ("RUNMODEL_loans_1",)
    )

    kept = plan_undeploy(
        dialect, "apps", "loans", table, prediction_columns=["PREDICTION", "no", "yes"]
    )
    dropped = plan_undeploy(
        dialect,
        "apps",
        "loans",
        table,
        prediction_columns=["PREDICTION", "no", "yes"],
        drop_columns=True,
    )
    unnamed = plan_undeploy(dialect, "apps", "loans", table, drop_columns=True)

    if dialect == "sqlite":
        assert [s.sql for s in kept.steps] == ['DROP TRIGGER "RUNMODEL_loans_1"']
        assert [s.sql for s in dropped.steps] == [
            'DROP TRIGGER "RUNMODEL_loans_1"',
            'ALTER TABLE "loans" DROP COLUMN "prediction"',
            'ALTER TABLE "loans" DROP COLUMN "no"',
        ]
    else:
        assert [s.sql for s in kept.steps] == [
            'DROP TRIGGER "RUNMODEL_loans_1" ON "apps"."loans"',
            'DROP INDEX IF EXISTS "apps"."mlmanager_unscored_loans"',
        ]
        assert [s.sql for s in dropped.steps][2:] == [
            'ALTER TABLE "apps"."loans" DROP COLUMN "prediction"',
            'ALTER TABLE "apps"."loans" DROP COLUMN "no"',
        ]
    assert unnamed.notes == ["no deployment record names the prediction columns: none dropped"]
    assert "-- Step 1: drop trigger RUNMODEL_loans_1" in kept.render()
