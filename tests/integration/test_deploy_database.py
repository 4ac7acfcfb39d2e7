"""DEPLOY_DATABASE / UNDEPLOY_DATABASE run in this process against real databases.

Real PostgreSQL with PL/Python (and SQLite); the handler code is the worker's,
called step by step so that failures can be injected between plan steps. The
flow through the running server and worker is in ``test_deploy_database_flow``.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
import warnings
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
import psycopg
import pytest
import xgboost
from mlflow.models import infer_signature
from pydantic import ValidationError
from sklearn.linear_model import LinearRegression, LogisticRegression
from sqlalchemy import Engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError

from shared.errors import (
    DeploymentConflict,
    InvalidPayload,
    MLManagerError,
    NotAuthorized,
    NotFound,
)
from shared.migrations import upgrade
from shared.scoring.plan import DeploymentPlan, PlanStep
from shared.settings import Settings
from tests.support.engines import EngineFor, settings_for
from tests.support.indb import (
    features,
    insert_rows,
    park_job,
    plain_pg,
    read_rows,
    run_job,
    run_steps,
    schema_for,
)
from tests.support.mlflow_store import (
    INPUT_EXAMPLE_WARNING,
    MLFLOW_SQLITE_STORE_WARNING,
    log_sklearn,
)
from tests.support.pg import PostgresServer
from tests.support.processes import clean_environment

with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message=".*Any type hint is inferred as AnyType")
    import mlflow.pyfunc

pytestmark = [
    pytest.mark.postgres,
    MLFLOW_SQLITE_STORE_WARNING,
    INPUT_EXAMPLE_WARNING,
]


def test_classifier_scores_every_inserted_row_on_a_new_table(
    tracking: None, deployed_db: tuple[str, Engine, Settings]
) -> None:
    url, engine, settings = deployed_db
    train = features(200, 1)
    labels = np.where(train.score > 0.3, "high", np.where(train.score < -0.3, "low", "mid"))
    model = LogisticRegression(max_iter=500).fit(train, labels)
    uri = log_sklearn(model, train)
    schema = schema_for(url)

    lines = run_job(
        engine,
        settings,
        "DEPLOY_DATABASE",
        {
            "model_uri": uri,
            "db_schema": schema,
            "db_table": "customers",
            "create_model_table": True,
            "primary_key": {"id": "INTEGER"},
            "reference_table": None,
        },
    )
    print("\n".join(lines))
    new = features(25, 2)
    rows = [(i, *r) for i, r in enumerate(new.itertuples(index=False))]
    insert_rows(url, "customers", ["id", "age", "income", "score"], rows, schema)

    table = "customers" if url.startswith("sqlite") else f"{schema}.customers"
    got = read_rows(url, f"SELECT id, prediction, high, low, mid FROM {table} ORDER BY id")
    expected_labels = model.predict(new)
    expected_probs = model.predict_proba(new)
    assert [r[1] for r in got] == list(expected_labels)
    np.testing.assert_allclose([r[2:] for r in got], expected_probs, atol=1e-6)
    with engine.connect() as conn:
        status = conn.execute(text("SELECT status, name FROM deployments")).all()
    assert status == [("DEPLOYED", f"{schema}.customers")]


# --- helpers -------------------------------------------------------------------------


class Injected(Exception):
    """A failure the test injects between two plan steps."""


def catalog(engine: Engine) -> list[tuple[Any, ...]]:
    """Everything a deploy may change: tables, columns, defaults, triggers, functions, rows."""
    with engine.connect() as conn:
        if engine.dialect.name == "sqlite":
            rows = conn.execute(text("SELECT type, name, sql FROM sqlite_master ORDER BY name"))
            shape = [tuple(r) for r in rows]
            user_tables = [r[1] for r in shape if r[0] == "table"]
        else:
            shape = [
                tuple(r)
                for r in conn.execute(
                    text(
                        "SELECT table_schema, table_name, column_name, data_type, "
                        "column_default FROM information_schema.columns WHERE table_schema "
                        "NOT IN ('pg_catalog', 'information_schema') ORDER BY 1, 2, 3"
                    )
                )
            ]
            shape += [
                tuple(r)
                for r in conn.execute(
                    text(
                        "SELECT tgname, tgrelid::regclass::text FROM pg_trigger "
                        "WHERE NOT tgisinternal UNION ALL SELECT n.nspname, p.proname "
                        "FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace "
                        "WHERE n.nspname NOT IN ('pg_catalog', 'information_schema') "
                        "UNION ALL SELECT nspname, 'schema' FROM pg_namespace "
                        "UNION ALL SELECT extname, 'extension' FROM pg_extension ORDER BY 1, 2"
                    )
                )
            ]
            user_tables = [
                f"{s}.{t}"
                for s, t in conn.execute(
                    text(
                        "SELECT table_schema, table_name FROM information_schema.tables "
                        "WHERE table_schema = 'apps'"
                    )
                )
            ]
        for table in [*user_tables, "model_representations", "deployments"]:
            if table in ("model_representations", "deployments") or "." in table:
                data = conn.execute(text(f"SELECT * FROM {table} ORDER BY 1")).all()
                shape.append((table, tuple(map(tuple, data))))
    return shape


def qualified(url: str, table: str) -> str:
    return table if url.startswith("sqlite") else f"apps.{table}"


def make_table(url: str, engine: Engine, table: str, rows: Any) -> None:
    """An application's existing table (id, age, income, score) with some rows."""
    with engine.begin() as conn:
        if not url.startswith("sqlite"):
            conn.execute(text("CREATE SCHEMA IF NOT EXISTS apps"))
        conn.execute(
            text(
                f"CREATE TABLE {qualified(url, table)} (id BIGINT PRIMARY KEY, "
                "age DOUBLE PRECISION, income DOUBLE PRECISION, score DOUBLE PRECISION)"
            )
        )
    if len(rows):
        insert_rows(url, table, ["id", "age", "income", "score"], rows, schema_for(url))


def as_rows(frame: Any, start: int = 0) -> list[tuple[Any, ...]]:
    values = frame.astype(object).where(frame.notna(), None)
    return [(start + i, *r) for i, r in enumerate(values.itertuples(index=False))]


def deploy_payload(url: str, uri: str, table: str, **extra: Any) -> dict[str, Any]:
    return {"model_uri": uri, "db_schema": schema_for(url), "db_table": table, **extra}


def two_models() -> tuple[Any, str, Any, str]:
    """Two classifiers (A and B) on the same three features, telling different things."""
    train = features(300, 7)
    a = LogisticRegression(max_iter=500).fit(train, train.score > 0)
    b = LogisticRegression(max_iter=500).fit(train, train.income > 50)
    return a, log_sklearn(a, train), b, log_sklearn(b, train)


# --- tests ---------------------------------------------------------------------------


def test_existing_rows_are_scored_and_null_features_give_what_the_model_gives(
    tracking: None, deployed_db: tuple[str, Engine, Settings]
) -> None:
    url, engine, settings = deployed_db
    train = features(300, 3)
    model = xgboost.XGBClassifier(n_estimators=20, max_depth=3).fit(train, train.score > 0)
    with mlflow.start_run():
        uri = mlflow.xgboost.log_model(
            model, name="model", signature=infer_signature(train), input_example=train.head(5)
        ).model_uri
    old = features(30, 4)
    old.loc[[3, 7], "income"] = np.nan
    make_table(url, engine, "loans", as_rows(old))

    run_job(
        engine, settings, "DEPLOY_DATABASE", deploy_payload(url, uri, "loans", score_existing=True)
    )
    new = features(10, 5)
    new.loc[[0, 4], "age"] = np.nan
    insert_rows(url, "loans", ["id", *new.columns], as_rows(new, 100), schema_for(url))

    got = read_rows(url, f"SELECT c0, c1 FROM {qualified(url, 'loans')} ORDER BY id")
    every = pd.concat([old, new])
    np.testing.assert_allclose(got, model.predict_proba(every), atol=1e-5)
    labels = read_rows(url, f"SELECT prediction FROM {qualified(url, 'loans')} ORDER BY id")
    assert [r[0] for r in labels] == [str(v) for v in model.predict(every)]


def test_replace_swaps_the_model_while_another_session_keeps_inserting(
    tracking: None, deployed_db: tuple[str, Engine, Settings]
) -> None:
    url, engine, settings = deployed_db
    a, a_uri, b, b_uri = two_models()
    make_table(url, engine, "stream", [])
    run_job(engine, settings, "DEPLOY_DATABASE", deploy_payload(url, a_uri, "stream"))
    rows = features(2000, 8)
    stop = threading.Event()
    inserted: list[int] = []
    failures: list[BaseException] = []

    def keep_inserting() -> None:
        try:
            for i, row in enumerate(as_rows(rows)):
                if stop.is_set():
                    return
                insert_rows(url, "stream", ["id", *rows.columns], [row], schema_for(url))
                inserted.append(i)
        except BaseException as exc:
            failures.append(exc)

    def wait_for(count: int) -> None:
        deadline = time.monotonic() + 60
        while len(inserted) < count and not failures and time.monotonic() < deadline:
            time.sleep(0.01)
        assert not failures, failures
        assert len(inserted) >= count, f"only {len(inserted)} rows inserted"

    inserter = threading.Thread(target=keep_inserting)
    inserter.start()
    try:
        wait_for(20)
        payload = deploy_payload(url, b_uri, "stream", replace=True)
        run_job(engine, settings, "DEPLOY_DATABASE", payload)
        wait_for(len(inserted) + 20)
    finally:
        stop.set()
        inserter.join()

    got = read_rows(
        url, f"SELECT id, run_id, prediction FROM {qualified(url, 'stream')} ORDER BY id"
    )
    assert len(got) == len(inserted)
    a_run, b_run = (
        mlflow.get_run(mlflow.models.get_model_info(u).run_id).info.run_id for u in (a_uri, b_uri)
    )
    x = rows.iloc[[r[0] for r in got]]
    by_a, by_b = a.predict(x), b.predict(x)
    runs = [r[1] for r in got]
    assert set(runs) == {a_run, b_run}
    first_b = runs.index(b_run)
    assert runs[first_b:] == [b_run] * (len(runs) - first_b)  # no row of A after the swap
    for (row_id, run, prediction), want_a, want_b in zip(got, by_a, by_b, strict=True):
        assert prediction == str(want_a if run == a_run else want_b), row_id


def test_undeploy_drops_the_trigger_keeps_the_data_and_can_drop_the_columns(
    tracking: None, deployed_db: tuple[str, Engine, Settings]
) -> None:
    url, engine, settings = deployed_db
    _, a_uri, _, _ = two_models()
    make_table(url, engine, "kept", as_rows(features(5, 9)))
    run_job(
        engine, settings, "DEPLOY_DATABASE", deploy_payload(url, a_uri, "kept", score_existing=True)
    )

    run_job(engine, settings, "UNDEPLOY_DATABASE", deploy_payload(url, a_uri, "kept"))
    insert_rows(
        url, "kept", ["id", "age", "income", "score"], [(50, 1.0, 2.0, 3.0)], schema_for(url)
    )
    got = read_rows(url, f"SELECT count(*), count(prediction) FROM {qualified(url, 'kept')}")
    assert got == [(6, 5)]
    with engine.connect() as conn:
        assert conn.execute(text("SELECT status FROM deployments")).scalars().all() == ["DELETED"]
    with pytest.raises(NotFound, match="no model is deployed"):
        run_job(engine, settings, "UNDEPLOY_DATABASE", deploy_payload(url, a_uri, "kept"))

    run_job(engine, settings, "DEPLOY_DATABASE", deploy_payload(url, a_uri, "kept"))
    run_job(
        engine, settings, "UNDEPLOY_DATABASE", deploy_payload(url, a_uri, "kept", drop_columns=True)
    )
    columns = read_rows(url, f"SELECT * FROM {qualified(url, 'kept')} WHERE id = 0")
    assert len(columns[0]) == 4 + 3  # features, key and the contract columns; no prediction


def test_a_second_model_needs_replace(
    tracking: None, deployed_db: tuple[str, Engine, Settings]
) -> None:
    url, engine, settings = deployed_db
    _, a_uri, _, b_uri = two_models()
    make_table(url, engine, "one", as_rows(features(5, 10)))
    run_job(engine, settings, "DEPLOY_DATABASE", deploy_payload(url, a_uri, "one"))
    before = catalog(engine)
    with pytest.raises(DeploymentConflict, match=r"already has a model deployed.*set replace"):
        run_job(engine, settings, "DEPLOY_DATABASE", deploy_payload(url, b_uri, "one"))
    assert catalog(engine) == before
    if not url.startswith("sqlite"):  # a regression cannot write into a label column
        train = features(100, 12)
        regression = log_sklearn(LinearRegression().fit(train, train.income), train)
        with pytest.raises(DeploymentConflict, match=r"column prediction of apps\.one is TEXT"):
            payload = deploy_payload(url, regression, "one", replace=True)
            run_job(engine, settings, "DEPLOY_DATABASE", payload)
        assert catalog(engine) == before


def test_dry_run_prints_the_plan_and_changes_nothing(
    tracking: None, deployed_db: tuple[str, Engine, Settings]
) -> None:
    url, engine, settings = deployed_db
    _, a_uri, _, _ = two_models()
    before = catalog(engine)
    lines = run_job(
        engine,
        settings,
        "DEPLOY_DATABASE",
        deploy_payload(
            url,
            a_uri,
            "planned",
            create_model_table=True,
            primary_key={"id": "BIGINT"},
            dry_run=True,
        ),
    )
    plan = next(line for line in lines if line.startswith("dry run"))
    assert "CREATE TABLE" in plan and "CREATE TRIGGER" in plan
    assert catalog(engine) == before


@pytest.mark.parametrize("scenario", ["new_table", "replace_on_existing_table"])
def test_a_failure_at_any_plan_step_leaves_the_database_as_it_was(
    tracking: None,
    deployed_db: tuple[str, Engine, Settings],
    monkeypatch: pytest.MonkeyPatch,
    scenario: str,
) -> None:
    url, engine, settings = deployed_db
    _, a_uri, _, b_uri = two_models()
    if scenario == "new_table":
        payload = deploy_payload(
            url, b_uri, "fresh", create_model_table=True, primary_key={"id": "BIGINT"}
        )
    else:
        make_table(url, engine, "fresh", as_rows(features(20, 11)))
        run_job(engine, settings, "DEPLOY_DATABASE", deploy_payload(url, a_uri, "fresh"))
        payload = deploy_payload(url, b_uri, "fresh", replace=True, score_existing=True)
    original = DeploymentPlan.execute
    planned: list[list[str]] = []

    def failing_at(step: int) -> Any:
        def execute(self: DeploymentPlan, conn: Any, before_step: Any = None) -> None:
            planned.append([s.description for s in self.steps])

            def fail(number: int, described: PlanStep) -> None:
                if number == step:
                    raise Injected(f"step {number}: {described.description}")

            original(self, conn, fail)

        return execute

    step = 1
    while True:
        before = catalog(engine)
        monkeypatch.setattr(DeploymentPlan, "execute", failing_at(step))
        with pytest.raises(Injected):
            run_job(engine, settings, "DEPLOY_DATABASE", payload)
        assert catalog(engine) == before, f"changed by a failure at {planned[-1][step - 1]}"
        if step == len(planned[-1]):
            break
        step += 1
    assert step >= (2 if scenario == "new_table" else 3)


@pytest.mark.parametrize(
    "change",
    [
        {"db_table": 'x"; DROP TABLE jobs; --'},
        {"db_schema": "apps.public"},
        {"create_model_table": True, "primary_key": {"id; DROP TABLE jobs": "BIGINT"}},
        {"create_model_table": True, "primary_key": {"id": "BIGINT); DROP TABLE jobs; --"}},
        {"create_model_table": True, "df_schema": {"a b": "TEXT"}, "primary_key": {"id": "INT"}},
        {"model_cols": ["age", "income", "sc'ore"]},
        {"reference_table": "jobs where 1=1"},
    ],
)
def test_hostile_names_are_refused_before_anything_runs(
    tracking: None, deployed_db: tuple[str, Engine, Settings], change: dict[str, Any]
) -> None:
    url, engine, settings = deployed_db
    _, a_uri, _, _ = two_models()
    before = catalog(engine)
    payload = deploy_payload(url, a_uri, "target") | change
    with pytest.raises(ValidationError) as refused:
        run_job(engine, settings, "DEPLOY_DATABASE", payload)
    assert set(change) & {str(e["loc"][0]) for e in refused.value.errors()}
    assert catalog(engine) == before


@pytest.fixture
def pg_deployed(pg_url: str, engine_for: EngineFor, tmp_path: Path) -> tuple[str, Engine, Settings]:
    engine = engine_for(pg_url)
    upgrade(engine)
    return pg_url, engine, settings_for(pg_url, tmp_path, auth_backend="database")


def test_ddl_runs_with_the_requesting_database_users_rights(
    tracking: None, pg_deployed: tuple[str, Engine, Settings], pg_server: PostgresServer
) -> None:
    url, engine, settings = pg_deployed
    a, a_uri, _, _ = two_models()
    database = make_url(url).database
    with pg_server.connect(database) as admin:
        admin.execute("DROP ROLE IF EXISTS analyst")
        admin.execute("CREATE ROLE analyst LOGIN PASSWORD 'analyst-pw'")
        admin.execute("CREATE SCHEMA apps")
    payload = deploy_payload(
        url, a_uri, "scores", create_model_table=True, primary_key={"id": "BIGINT"}
    )
    before = catalog(engine)
    with pytest.raises(NotAuthorized, match="database user analyst may not deploy onto apps"):
        run_job(engine, settings, "DEPLOY_DATABASE", payload, user="analyst")
    assert catalog(engine) == before

    with pg_server.connect(database) as admin:
        admin.execute("GRANT USAGE, CREATE ON SCHEMA apps TO analyst")
    run_job(engine, settings, "DEPLOY_DATABASE", payload, user="analyst")
    analyst = f"host={pg_server.host} port={pg_server.port} dbname={database} user=analyst"
    with psycopg.connect(f"{analyst} password=analyst-pw", autocommit=True) as conn:
        owner = conn.execute("SELECT tableowner FROM pg_tables WHERE tablename = 'scores'")
        assert owner.fetchone() == ("analyst",)
        conn.execute("INSERT INTO apps.scores (id, age, income, score) VALUES (1, 40, 55, 0.5)")
        row = conn.execute("SELECT prediction, cur_user FROM apps.scores").fetchone()
    x = pd.DataFrame({"age": [40.0], "income": [55.0], "score": [0.5]})
    assert row == (str(a.predict(x)[0]), "analyst")


def test_sql_functions_score_one_row_and_a_query(
    tracking: None, pg_url: str, engine_for: EngineFor, tmp_path: Path
) -> None:
    engine = engine_for(pg_url)
    upgrade(engine)
    settings = settings_for(pg_url, tmp_path)
    a, a_uri, _, _ = two_models()
    make_table(pg_url, engine, "people", as_rows(features(12, 13)))
    run_job(
        engine,
        settings,
        "DEPLOY_DATABASE",
        deploy_payload(pg_url, a_uri, "people", score_existing=True),
    )
    with plain_pg(pg_url) as conn:
        one = conn.execute(
            "SELECT t.prediction, mlmanager.predict(r.id::text, to_jsonb(t)) "
            "FROM apps.people t, mlmanager.model_representations r ORDER BY t.id"
        ).fetchall()
        batch = conn.execute(
            "SELECT mlmanager.predict_batch(%s, jsonb_agg(jsonb_build_array(age, income, score) "
            "ORDER BY id)) FROM apps.people",
            [mlflow.models.get_model_info(a_uri).run_id],
        ).fetchall()
        with pytest.raises(psycopg.errors.ExternalRoutineException, match="no deployed model"):
            conn.execute("SELECT mlmanager.predict('nothing', '{}'::jsonb)")
    assert [p["PREDICTION"] for _, p in one] == [stored for stored, _ in one]
    assert [p[0]["PREDICTION"] for p in batch] == [stored for stored, _ in one]
    assert set(one[0][1]) == {"PREDICTION", "C0", "C1"}
    x = features(12, 13)
    assert [stored for stored, _ in one] == [str(v) for v in a.predict(x)]


def test_the_scoring_functions_install_once_with_the_cli(
    pg_url: str, engine_for: EngineFor, tmp_path: Path
) -> None:
    engine = engine_for(pg_url)
    upgrade(engine)
    env = clean_environment() | {"DB_URL": pg_url, "MLMANAGER_HOME": str(tmp_path / "home")}
    command = [sys.executable, "-m", "mlmanager", "db", "install-scoring"]
    first = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    second = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert first.returncode == 0, first.stderr
    assert "installed" in first.stdout and "already up to date" in second.stdout
    with plain_pg(pg_url) as conn:  # the embedded code imports numpy and onnxruntime
        assert conn.execute("SELECT mlmanager.scoring_load()::text").fetchone() == ("",)
    with plain_pg(pg_url) as conn:  # a database Python without them says what to do
        conn.execute("SET mlmanager.plpython_path = '/nowhere'")
        with pytest.raises(psycopg.Error, match=r"cannot import numpy.*make plpython-deps"):
            conn.execute("SELECT mlmanager.scoring_load()")


@pytest.mark.parametrize("trigger_mode", ["statement", "row"])
def test_one_session_inserting_many_times_gets_every_row_scored(
    tracking: None, pg_url: str, engine_for: EngineFor, tmp_path: Path, trigger_mode: str
) -> None:
    """The trigger's prepared statements are reused across the session's INSERTs."""
    engine = engine_for(pg_url)
    upgrade(engine)
    a, a_uri, _, _ = two_models()
    make_table(pg_url, engine, "many", [])
    payload = deploy_payload(pg_url, a_uri, "many", trigger_mode=trigger_mode)
    run_job(engine, settings_for(pg_url, tmp_path), "DEPLOY_DATABASE", payload)
    x = features(40, 14)
    rows = as_rows(x)
    with plain_pg(pg_url) as conn:
        for start, stop in ((0, 1), (1, 15), (15, 16), (16, 40)):
            chunk = rows[start:stop]
            marks = ", ".join("(%s, %s, %s, %s)" for _ in chunk)
            conn.execute(
                f"INSERT INTO apps.many (id, age, income, score) VALUES {marks}",
                [v for row in chunk for v in row],
            )
        got = conn.execute("SELECT prediction, c0, c1 FROM apps.many ORDER BY id").fetchall()
    assert [r[0] for r in got] == [str(v) for v in a.predict(x)]
    np.testing.assert_allclose([r[1:] for r in got], a.predict_proba(x), atol=1e-6)


def test_two_deploys_onto_one_new_table_at_once_give_one_model_and_one_clear_refusal(
    tracking: None, deployed_db: tuple[str, Engine, Settings]
) -> None:
    url, engine, settings = deployed_db
    _, a_uri, _, b_uri = two_models()
    outcomes: list[str] = []

    def deploy(uri: str) -> None:
        payload = deploy_payload(
            url, uri, "contested", create_model_table=True, primary_key={"id": "BIGINT"}
        )
        try:
            run_job(engine, settings, "DEPLOY_DATABASE", payload)
            outcomes.append("deployed")
        except DeploymentConflict as exc:
            outcomes.append(f"refused: {exc}")

    threads = [threading.Thread(target=deploy, args=(uri,)) for uri in (a_uri, b_uri)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(o.split(":")[0] for o in outcomes) == ["deployed", "refused"], outcomes
    assert "already has a model deployed" in next(o for o in outcomes if o != "deployed")
    with engine.connect() as conn:
        deployed = conn.execute(text("SELECT count(*) FROM deployments WHERE status = 'DEPLOYED'"))
        assert deployed.scalar() == 1


def test_async_mode_on_sqlite_is_refused_and_changes_nothing(
    tracking: None, sqlite_url: str, engine_for: EngineFor, tmp_path: Path
) -> None:
    engine = engine_for(sqlite_url)
    upgrade(engine)
    _, a_uri, _, _ = two_models()
    make_table(sqlite_url, engine, "events", as_rows(features(5, 15)))
    before = catalog(engine)
    for dry_run in (True, False):
        payload = deploy_payload(sqlite_url, a_uri, "events", mode="async", dry_run=dry_run)
        with pytest.raises(InvalidPayload, match="mode async needs PostgreSQL"):
            run_job(engine, settings_for(sqlite_url, tmp_path), "DEPLOY_DATABASE", payload)
    assert catalog(engine) == before


# --- reruns: a job whose worker died after its transaction committed ---------------------


def deployments_of(engine: Engine, name: str) -> list[tuple[Any, ...]]:
    with engine.connect() as conn:
        rows = conn.execute(
            text("SELECT job_id, status, model_uri FROM deployments WHERE name = :n ORDER BY id"),
            {"n": name},
        )
        return [tuple(r) for r in rows]


def test_a_rerun_after_a_committed_deploy_replace_or_undeploy_converges(
    tracking: None, deployed_db: tuple[str, Engine, Settings]
) -> None:
    """Each job's steps run twice, as when the first attempt committed and its worker died
    before recording SUCCESS: the second attempt recognises its own work (deployments.job_id,
    the DELETED record's undeployed_by_job) and ends well, changing nothing."""
    url, engine, settings = deployed_db
    _, a_uri, b, b_uri = two_models()
    make_table(url, engine, "again", as_rows(features(5, 21)))
    name = f"{schema_for(url)}.again"

    deploy = park_job(engine, "DEPLOY_DATABASE", deploy_payload(url, a_uri, "again"))
    lines = run_steps(engine, settings, deploy)
    # The log names the prediction columns as the table has them (lower case on PostgreSQL).
    built = next(ln for ln in lines if "prediction columns" in ln)
    columns = "PREDICTION, C0, C1" if url.startswith("sqlite") else "prediction, c0, c1"
    assert built.endswith(f"prediction columns {columns}"), built
    before = catalog(engine)
    lines = run_steps(engine, settings, deploy)  # was: "already has a model deployed"
    assert any("earlier attempt of this job already deployed" in ln for ln in lines)
    assert catalog(engine) == before

    payload = deploy_payload(url, b_uri, "again", replace=True)
    replace = park_job(engine, "DEPLOY_DATABASE", payload)
    run_steps(engine, settings, replace)
    before = catalog(engine)
    run_steps(engine, settings, replace)  # was: a second swap, B over B
    assert catalog(engine) == before
    assert deployments_of(engine, name) == [
        (deploy.id, "DELETED", a_uri),
        (replace.id, "DEPLOYED", b_uri),
    ]
    rows = features(4, 22)
    insert_rows(url, "again", ["id", "age", "income", "score"], as_rows(rows, 100), schema_for(url))
    got = read_rows(url, f"SELECT prediction FROM {qualified(url, 'again')} WHERE id >= 100")
    assert [r[0] for r in got] == [str(v) for v in b.predict(rows)]

    undeploy = park_job(engine, "UNDEPLOY_DATABASE", deploy_payload(url, b_uri, "again"))
    run_steps(engine, settings, undeploy)
    before = catalog(engine)
    lines = run_steps(engine, settings, undeploy)  # was: NotFound "no model is deployed"
    assert any("earlier attempt of this job already removed" in ln for ln in lines)
    assert catalog(engine) == before
    # Another undeploy job still learns that nothing is deployed.
    with pytest.raises(NotFound, match="no model is deployed"):
        run_job(engine, settings, "UNDEPLOY_DATABASE", deploy_payload(url, b_uri, "again"))


def test_undeploy_whose_connection_drops_is_retryable_not_not_found(
    tracking: None, pg_url: str, engine_for: EngineFor, tmp_path: Path
) -> None:
    """The connection of the undeploy dies (pg_terminate_backend: PostgreSQL only) while it
    reads the table's catalog: a database error, which the runner retries - not NotFound
    (permanent, "no model is deployed"); the next attempt undeploys."""
    url, engine = pg_url, engine_for(pg_url)
    upgrade(engine)
    settings = settings_for(url, tmp_path)
    _, a_uri, _, _ = two_models()
    make_table(url, engine, "dropped", as_rows(features(5, 23)))
    run_job(engine, settings, "DEPLOY_DATABASE", deploy_payload(url, a_uri, "dropped"))
    undeploy = park_job(engine, "UNDEPLOY_DATABASE", deploy_payload(url, a_uri, "dropped"))

    killed: list[int] = []

    def drop_connection(_conn: Any, cursor: Any, statement: str, *_: Any) -> None:
        # Once, just before read_table's query of the table's triggers.
        if "pg_trigger" in statement and not killed:
            killed.append(cursor.connection.info.backend_pid)
            with plain_pg(url) as other:
                other.execute("SELECT pg_terminate_backend(%s, 5000)", [killed[0]])

    event.listen(engine, "before_cursor_execute", drop_connection)
    try:
        with pytest.raises(DBAPIError) as raised:
            run_steps(engine, settings, undeploy)
    finally:
        event.remove(engine, "before_cursor_execute", drop_connection)
    assert killed and not isinstance(raised.value, MLManagerError)
    assert deployments_of(engine, f"{schema_for(url)}.dropped")[0][1] == "DEPLOYED"

    lines = run_steps(engine, settings, undeploy)
    assert any("no longer scores inserted rows" in ln for ln in lines)
    assert deployments_of(engine, f"{schema_for(url)}.dropped")[0][1] == "DELETED"


def test_reconcile_re_creates_a_dropped_trigger_and_column_and_a_rerun_changes_nothing(
    tracking: None, deployed_db: tuple[str, Engine, Settings]
) -> None:
    """RECONCILE (the handler, in-process) repairs from the record alone; on a deployment
    that matches its record it does nothing, so it may run again (idempotent)."""
    from shared.deployments import DeploymentStore
    from shared.targets import DatabaseTarget

    url, engine, settings = deployed_db
    a, a_uri, _, _ = two_models()
    make_table(url, engine, "healed", as_rows(features(3, 4)))
    run_job(engine, settings, "DEPLOY_DATABASE", deploy_payload(url, a_uri, "healed"))
    (deployment,) = DeploymentStore(engine).list()
    spec = deployment.spec
    assert spec is not None
    target = DatabaseTarget(engine)
    assert target.observe(deployment).in_sync
    column = spec.prediction_columns[-1]
    on = "" if url.startswith("sqlite") else f" ON {qualified(url, 'healed')}"
    with engine.begin() as conn:
        conn.exec_driver_sql(f'DROP TRIGGER "{spec.trigger}"{on}')
        conn.exec_driver_sql(f'ALTER TABLE {qualified(url, "healed")} DROP COLUMN "{column}"')
    assert set(target.observe(deployment).drift) == {
        f"trigger {spec.trigger} missing",
        f"column {column} missing",
    }

    lines = run_job(engine, settings, "RECONCILE", {"deployment_id": deployment.id})
    assert any(f"add column {column}" in line and "create the" in line for line in lines), lines
    assert target.observe(deployment).in_sync
    new = features(4, 5)
    insert_rows(
        url,
        "healed",
        ["id", "age", "income", "score"],
        [(100 + i, *r) for i, r in enumerate(new.itertuples(index=False))],
        schema_for(url),
    )
    got = read_rows(
        url, f'SELECT "{column}" FROM {qualified(url, "healed")} WHERE id >= 100 ORDER BY id'
    )
    np.testing.assert_allclose([g[0] for g in got], a.predict_proba(new)[:, -1], atol=1e-5)

    again = run_job(engine, settings, "RECONCILE", {})
    assert any("matches its record" in line for line in again), again
