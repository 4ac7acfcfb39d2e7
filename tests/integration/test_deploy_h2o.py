"""H2O models deployed onto database tables, scored by mlrunner (the JVM) through py4j.

Real PostgreSQL (the trigger's PL/Python starts and reuses the database user's
gateway) and SQLite (``mlmanager.connect``, this process's gateway), real H2O:
the models are trained here with the ``h2o`` package in a local H2O cluster,
and every prediction read back from the table is compared with H2O's own
prediction for that row. Needs the jar (`make mlrunner`, a dependency of `make test`).
"""

from __future__ import annotations

import json
import os
import pwd
import signal
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
import psycopg
import pytest
from sqlalchemy import Engine

from shared.errors import InvalidPayload
from shared.migrations import upgrade
from shared.scoring import jvm
from shared.settings import Settings
from tests.support.engines import EngineFor, settings_for
from tests.support.indb import insert_rows, plain_pg, read_rows, run_job, schema_for
from tests.support.mlflow_store import (
    INPUT_EXAMPLE_WARNING,
    MLFLOW_SQLITE_STORE_WARNING,
    log_model,
    temporary_tracking_store,
)
from tests.support.workers import WorkerProcess, wait_until

with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message=".*Any type hint is inferred as AnyType")
    import mlflow.h2o
    import mlflow.pyfunc

pytestmark = [
    pytest.mark.postgres,
    MLFLOW_SQLITE_STORE_WARNING,
    INPUT_EXAMPLE_WARNING,
    # h2o's own: its frames convert to pandas on one thread without polars.
    pytest.mark.filterwarnings("ignore:Converting H2O frame to pandas"),
    pytest.mark.filterwarnings("ignore::DeprecationWarning:h2o"),
    # Our rows hold a category H2O never saw, on purpose.
    pytest.mark.filterwarnings("ignore:Test/Validation dataset column 'segment' has levels"),
]
COLUMNS = ["id", "age", "income", "segment"]


def customers(rows: int, seed: int) -> pd.DataFrame:
    """Two numbers and a category; churn depends on all three."""
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(
        {
            "age": rng.integers(18, 90, rows).astype(np.float64),
            "income": rng.normal(50.0, 15.0, rows),
            "segment": rng.choice(["retail", "smb", "enterprise"], rows),
        }
    )
    return frame


def churn(frame: pd.DataFrame) -> np.ndarray:
    risk = (frame.age < 35).astype(float) + (frame.income < 45) + (frame.segment == "retail")
    return np.where(risk >= 2, "yes", "no")


@pytest.fixture(scope="module")
def h2o_module(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A local H2O cluster for the module (the deploy job in this process reuses it)."""
    import h2o

    h2o.init(nthreads=2, max_mem_size="1G", verbose=False)
    h2o.no_progress()
    with temporary_tracking_store(tmp_path_factory.mktemp("mlflow"), "h2o"):
        yield h2o
    h2o.cluster().shutdown()


@pytest.fixture(scope="module", autouse=True)
def stop_gateways() -> Iterator[None]:
    """Stop the gateways this module's sessions started (they outlive their sessions)."""
    yield
    jvm.stop()
    jvm.stop(jvm.state_dir(pwd.getpwnam("postgres").pw_uid))


@pytest.fixture(scope="module")
def trained(h2o_module: Any) -> dict[str, Any]:
    """A GBM classifier and a GBM regressor, each logged with MLflow's h2o flavor."""
    from h2o.estimators import H2OGradientBoostingEstimator

    train = customers(400, 1)
    target = train.assign(churn=churn(train), spend=train.income * 0.3 - train.age * 0.1)
    frame = h2o_module.H2OFrame(target, column_types={"segment": "enum", "churn": "enum"})
    models = {}
    for name, response in (("classifier", "churn"), ("regressor", "spend")):
        model = H2OGradientBoostingEstimator(ntrees=20, max_depth=4, seed=7)
        model.train(x=["age", "income", "segment"], y=response, training_frame=frame)
        models[name] = (model, log_model(mlflow.h2o, model, train))
    return models


def h2o_predictions(h2o: Any, model: Any, frame: pd.DataFrame) -> pd.DataFrame:
    h2o_frame = h2o.H2OFrame(frame, column_types={"segment": "enum"})
    return model.predict(h2o_frame).as_data_frame(use_multi_thread=False)


@pytest.fixture
def database(db_url: str, engine_for: EngineFor, tmp_path: Path) -> tuple[str, Engine, Settings]:
    engine = engine_for(db_url)
    upgrade(engine)
    return db_url, engine, settings_for(db_url, tmp_path)


def deploy(url: str, engine: Engine, settings: Settings, uri: str, table: str) -> list[str]:
    payload = {
        "model_uri": uri,
        "db_schema": schema_for(url),
        "db_table": table,
        "create_model_table": True,
        "primary_key": {"id": "INTEGER"},
    }
    return run_job(engine, settings, "DEPLOY_DATABASE", payload)


def table_name(url: str, table: str) -> str:
    return table if url.startswith("sqlite") else f"apps.{table}"


def new_rows(seed: int, count: int, start: int = 0) -> tuple[pd.DataFrame, list[tuple[Any, ...]]]:
    frame = customers(count, seed)
    # A missing number and a category H2O never saw: both are NA to H2O and to the MOJO.
    frame.loc[1, "income"] = np.nan
    frame.loc[2, "segment"] = "government"
    rows = [
        (start + i, r.age, None if np.isnan(r.income) else r.income, r.segment)
        for i, r in enumerate(frame.itertuples(index=False))
    ]
    return frame, rows


def test_gbm_classifier_and_regressor_score_every_inserted_row_as_h2o_does(
    h2o_module: Any, trained: dict[str, Any], database: tuple[str, Engine, Settings]
) -> None:
    url, engine, settings = database
    classifier, classifier_uri = trained["classifier"]
    lines = deploy(url, engine, settings, classifier_uri, "churn")
    assert any("mlrunner agrees with H2O" in line for line in lines), lines
    regressor, regressor_uri = trained["regressor"]
    deploy(url, engine, settings, regressor_uri, "spend")

    frame, rows = new_rows(2, 30)
    insert_rows(url, "churn", COLUMNS, rows[:1], schema_for(url))  # one row
    insert_rows(url, "churn", COLUMNS, rows[1:], schema_for(url))  # many in one statement
    insert_rows(url, "spend", COLUMNS, rows, schema_for(url))

    expected = h2o_predictions(h2o_module, classifier, frame)
    got = read_rows(
        url, f"SELECT id, prediction, no, yes FROM {table_name(url, 'churn')} ORDER BY id"
    )
    assert [r[1] for r in got] == expected["predict"].tolist()
    np.testing.assert_allclose([r[2:] for r in got], expected[["no", "yes"]], rtol=1e-9)
    assert len(set(expected["predict"])) == 2  # the rows exercise both classes

    expected = h2o_predictions(h2o_module, regressor, frame)
    got = read_rows(url, f"SELECT id, prediction FROM {table_name(url, 'spend')} ORDER BY id")
    np.testing.assert_allclose([r[1] for r in got], expected["predict"], rtol=1e-9)


def test_a_mojo_logged_as_an_artifact_deploys_by_its_uri(
    h2o_module: Any, trained: dict[str, Any], pg_url: str, engine_for: EngineFor, tmp_path: Path
) -> None:
    engine = engine_for(pg_url)
    upgrade(engine)
    settings = settings_for(pg_url, tmp_path)
    classifier, _ = trained["classifier"]
    mojo = Path(classifier.save_mojo(path=str(tmp_path / "mojo"), force=True))
    with mlflow.start_run() as run:
        mlflow.log_artifact(str(mojo), artifact_path="mojo")
        # Sample rows for the check: a MOJO artifact has no input example.
        sample = customers(20, 3)
    with plain_pg(pg_url) as conn:
        conn.execute("CREATE SCHEMA apps")
        conn.execute(
            "CREATE TABLE apps.reference (id integer primary key, age float8, income float8, "
            "segment text)"
        )
        with conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO apps.reference VALUES (%s, %s, %s, %s)",
                [(i, *r) for i, r in enumerate(sample.itertuples(index=False))],
            )
    uri = f"runs:/{run.info.run_id}/mojo/{mojo.name}"
    payload = {
        "model_uri": uri,
        "db_schema": "apps",
        "db_table": "artifact_churn",
        "create_model_table": True,
        "primary_key": {"id": "INTEGER"},
        "reference_schema": "apps",
        "reference_table": "reference",
    }
    run_job(engine, settings, "DEPLOY_DATABASE", payload)
    frame, rows = new_rows(4, 12)
    insert_rows(pg_url, "artifact_churn", COLUMNS, rows, "apps")
    expected = h2o_predictions(h2o_module, classifier, frame)
    got = read_rows(pg_url, "SELECT prediction, yes FROM apps.artifact_churn ORDER BY id")
    assert [r[0] for r in got] == expected["predict"].tolist()
    np.testing.assert_allclose([r[1] for r in got], expected["yes"], rtol=1e-9)

    # A zip that is not a MOJO is refused before anything is created.
    not_mojo = tmp_path / "not_a_mojo.zip"
    not_mojo.write_bytes(b"PK\x05\x06" + b"\0" * 18)  # an empty zip archive
    with mlflow.start_run() as other:
        mlflow.log_artifact(str(not_mojo))
    payload.update(model_uri=f"runs:/{other.info.run_id}/not_a_mojo.zip", db_table="nothing")
    with pytest.raises(InvalidPayload, match="is not an H2O MOJO"):
        run_job(engine, settings, "DEPLOY_DATABASE", payload)


def database_gateway_pid() -> int:
    """The pid of the gateway the database's sessions share (the postgres user's)."""
    state = jvm.state_dir(pwd.getpwnam("postgres").pw_uid) / "gateway.json"
    return int(json.loads(state.read_text())["pid"])


def wait_gone(pid: int) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        # A zombie until its parent (a database session) reaps it: gone for our purpose.
        if Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z":
            return
        time.sleep(0.05)
    raise AssertionError(f"gateway {pid} still runs")


def test_a_killed_gateway_is_restarted_by_the_next_insert_and_a_missing_jar_fails_clearly(
    h2o_module: Any, trained: dict[str, Any], pg_url: str, engine_for: EngineFor, tmp_path: Path
) -> None:
    engine = engine_for(pg_url)
    upgrade(engine)
    classifier, uri = trained["classifier"]
    deploy(pg_url, engine, settings_for(pg_url, tmp_path), uri, "churn")
    frame, rows = new_rows(5, 40)
    expected = h2o_predictions(h2o_module, classifier, frame)["predict"].tolist()

    with plain_pg(pg_url) as session:  # one session across the kill: its connection breaks
        insert = 'INSERT INTO apps.churn ("id", "age", "income", "segment") VALUES (%s, %s, %s, %s)'
        session.execute(insert, rows[0])
        first = database_gateway_pid()
        os.kill(first, signal.SIGKILL)
        wait_gone(first)
        session.execute(insert, rows[1])  # the same session starts a new gateway
        second = database_gateway_pid()
        assert second != first
        os.kill(second, signal.SIGKILL)
        wait_gone(second)
    insert_rows(pg_url, "churn", COLUMNS, rows[2:20], "apps")  # a new session, a new gateway
    assert database_gateway_pid() != second

    # With no gateway running and the jar not where the setting says, an INSERT fails
    # at once with what to do, and the row is not stored.
    os.kill(database_gateway_pid(), signal.SIGKILL)
    with plain_pg(pg_url) as session:
        session.execute("SET mlmanager.mlrunner_jar = '/nowhere/mlrunner.jar'")
        started = time.monotonic()
        with pytest.raises(psycopg.Error, match="make mlrunner") as failed:
            session.execute(insert, rows[20])
        assert time.monotonic() - started < 30
        assert "/nowhere/mlrunner.jar" in str(failed.value)
    insert_rows(pg_url, "churn", COLUMNS, rows[21:], "apps")  # other sessions recover

    got = read_rows(pg_url, "SELECT id, prediction FROM apps.churn ORDER BY id")
    ids = [r[0] for r in got]
    assert ids == [i for i in range(40) if i != 20]
    assert [r[1] for r in got] == [expected[i] for i in ids]


def test_async_mode_scores_h2o_rows_in_the_worker(
    h2o_module: Any, trained: dict[str, Any], pg_url: str, engine_for: EngineFor, tmp_path: Path
) -> None:
    engine = engine_for(pg_url)
    upgrade(engine)
    regressor, uri = trained["regressor"]
    payload = {
        "model_uri": uri,
        "db_schema": "apps",
        "db_table": "later",
        "create_model_table": True,
        "primary_key": {"id": "INTEGER"},
        "mode": "async",
    }
    run_job(engine, settings_for(pg_url, tmp_path), "DEPLOY_DATABASE", payload)
    frame, rows = new_rows(6, 25)
    insert_rows(pg_url, "later", COLUMNS, rows, "apps")
    assert read_rows(pg_url, "SELECT count(*) FROM apps.later WHERE prediction IS NULL") == [(25,)]

    worker = WorkerProcess(pg_url, tmp_path, "h2o-scorer", async_scoring_sweep_seconds=0.5)
    try:
        worker.wait_healthy()
        wait_until(
            lambda: (
                read_rows(pg_url, "SELECT count(*) FROM apps.later WHERE prediction IS NULL")
                == [(0,)]
            ),
            60,
            "the worker to score the rows through mlrunner",
        )
    finally:
        worker.stop()
    expected = h2o_predictions(h2o_module, regressor, frame)["predict"]
    got = read_rows(pg_url, "SELECT prediction FROM apps.later ORDER BY id")
    np.testing.assert_allclose([r[0] for r in got], expected, rtol=1e-9)


def test_a_runner_that_disagrees_with_h2o_is_refused_before_the_table_is_touched(
    h2o_module: Any,
    trained: dict[str, Any],
    pg_url: str,
    engine_for: EngineFor,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from shared.scoring import mojo

    engine = engine_for(pg_url)
    upgrade(engine)
    _, uri = trained["classifier"]
    own = mojo._h2o_predictions

    def off_by_a_little(*args: Any) -> list[tuple[Any, ...]]:
        # As if H2O and the MOJO disagreed on the third row's probabilities.
        rows = own(*args)
        label, no, yes = rows[2]
        rows[2] = (label, no + 0.01, yes - 0.01)
        return rows

    monkeypatch.setattr(mojo, "_h2o_predictions", off_by_a_little)
    with pytest.raises(InvalidPayload, match=r"mlrunner does not reproduce .* row 2 no: model"):
        deploy(pg_url, engine, settings_for(pg_url, tmp_path), uri, "refused")
    assert read_rows(pg_url, "SELECT to_regclass('apps.refused')") == [(None,)]
