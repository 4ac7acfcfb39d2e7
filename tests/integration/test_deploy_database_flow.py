"""The whole flow, per model kind: log a model, deploy it through the running server and
worker, INSERT rows with a plain client, and read the model's own predictions back.

PostgreSQL (PL/Python triggers, rows inserted with psycopg) and SQLite (the
embedded default, rows inserted through ``mlmanager.connect``).
"""

from __future__ import annotations

import contextlib
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cloudpickle
import lightgbm
import mlflow
import numpy as np
import pandas as pd
import pytest
import requests
import xgboost
from mlflow.models import infer_signature
from sklearn.cluster import KMeans
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import RandomForestRegressor
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder

from tests.support import custom_models  # (first: imports mlflow.pyfunc quietly)
from tests.support.indb import insert_rows, plain_pg, read_rows, sqlite_path
from tests.support.mlflow_store import INPUT_EXAMPLE_WARNING
from tests.support.processes import clean_environment
from tests.support.servers import ADMIN_PASSWORD, MLManagerProcess, running_server

pytestmark = [
    pytest.mark.postgres,
    INPUT_EXAMPLE_WARNING,
    pytest.mark.filterwarnings("ignore:.*Passing a Python object as `python_model`"),
    pytest.mark.filterwarnings("ignore:Converting H2O frame to pandas"),
]
ADMIN = ("admin", ADMIN_PASSWORD)
TRUSTED_TREES = ["sklearn.tree._tree.Tree"]
SEGMENTS = np.array(["retail", "corporate", "public"])


@pytest.fixture(scope="module", params=["postgresql", "sqlite"])
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[MLManagerProcess]:
    with running_server(request, tmp_path_factory, request.param, "flow") as proc:
        yield proc


def data(rows: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "age": rng.integers(18, 90, rows).astype(np.float64),
            "income": rng.normal(50.0, 15.0, rows),
            "score": rng.uniform(-1.0, 1.0, rows),
            "segment": rng.choice(SEGMENTS, rows),
        }
    )


NUMERIC = ["age", "income", "score"]


@dataclass
class Case:
    """One model kind: how to train and log it, and its expected prediction columns."""

    name: str
    columns: list[str]
    train: Callable[[pd.DataFrame], Any]
    log: Callable[[Any, pd.DataFrame], Any]
    expected: Callable[[Any, pd.DataFrame], list[tuple[Any, ...]]]
    outputs: list[str]
    trigger_mode: str = "statement"


def _sk(model: Any, x: pd.DataFrame, **kw: Any) -> Any:
    return mlflow.sklearn.log_model(
        model, name="model", signature=infer_signature(x), input_example=x.head(5), **kw
    )


def _labels(x: pd.DataFrame) -> np.ndarray:
    return np.where(x.score > 0.3, "high", np.where(x.score < -0.3, "low", "mid"))


def _classes(model: Any, x: pd.DataFrame) -> list[tuple[Any, ...]]:
    labels = [str(v) for v in model.predict(x)]
    probabilities = model.predict_proba(x).tolist()
    return [(label, *probs) for label, probs in zip(labels, probabilities, strict=True)]


def _values(model: Any, x: pd.DataFrame) -> list[tuple[Any, ...]]:
    return [(float(v),) for v in np.asarray(model.predict(x)).reshape(-1)]


def _clusters(model: Any, x: pd.DataFrame) -> list[tuple[Any, ...]]:
    return [(int(v),) for v in model.predict(x)]


def _pipeline(x: pd.DataFrame) -> Pipeline:
    encode = ColumnTransformer(
        [("segment", OneHotEncoder(handle_unknown="ignore"), ["segment"])],
        remainder="passthrough",
    )
    pipeline = Pipeline([("encode", encode), ("model", LogisticRegression(max_iter=500))])
    return pipeline.fit(x, (x.segment == "retail") & (x.score > 0))


def _pyfunc_log(model: Any, x: pd.DataFrame) -> Any:
    # The class is pickled by value: the database's Python cannot import tests.
    cloudpickle.register_pickle_by_value(custom_models)
    try:
        return mlflow.pyfunc.log_model(
            name="model",
            python_model=model,
            signature=infer_signature(x, model.predict(None, x)),
            input_example=x.head(5),
            pip_requirements=[],
        )
    finally:
        cloudpickle.unregister_pickle_by_value(custom_models)


def _h2o() -> Any:
    """A local H2O cluster in this process; the worker's deploy job connects to it too."""
    import h2o

    if h2o.cluster() is None or not h2o.cluster().is_running():
        h2o.init(nthreads=2, max_mem_size="1G", verbose=False)
        h2o.no_progress()
    return h2o


def _h2o_frame(x: pd.DataFrame) -> Any:
    return _h2o().H2OFrame(x, column_types={"segment": "enum"})


def _h2o_gbm(x: pd.DataFrame) -> Any:
    from h2o.estimators import H2OGradientBoostingEstimator

    frame = _h2o_frame(
        x.assign(churn=np.where(x.score + (x.segment == "retail") > 0.5, "yes", "no"))
    )
    frame["churn"] = frame["churn"].asfactor()
    model = H2OGradientBoostingEstimator(ntrees=20, max_depth=4, seed=3)
    model.train(x=list(x.columns), y="churn", training_frame=frame)
    return model


def _h2o_log(model: Any, x: pd.DataFrame) -> Any:
    import mlflow.h2o

    return mlflow.h2o.log_model(
        model,
        name="model",
        signature=infer_signature(x),
        input_example=x.head(5),
        pip_requirements=[],
    )


def _h2o_classes(model: Any, x: pd.DataFrame) -> list[tuple[Any, ...]]:
    predicted = model.predict(_h2o_frame(x)).as_data_frame(use_multi_thread=False)
    return [(str(r.predict), float(r.no), float(r.yes)) for r in predicted.itertuples()]


CASES = [
    Case(
        "logistic_multiclass",
        NUMERIC,
        lambda x: LogisticRegression(max_iter=500).fit(x, _labels(x)),
        lambda m, x: _sk(m, x),
        _classes,
        ["prediction", "high", "low", "mid"],
    ),
    Case(
        "random_forest_regressor",
        NUMERIC,
        lambda x: RandomForestRegressor(n_estimators=20, max_depth=6, random_state=0).fit(
            x, x.income * x.score
        ),
        lambda m, x: _sk(m, x, skops_trusted_types=TRUSTED_TREES),
        _values,
        ["prediction"],
        trigger_mode="row",
    ),
    Case(
        "kmeans",
        NUMERIC,
        lambda x: KMeans(n_clusters=3, n_init=3, random_state=0).fit(x),
        lambda m, x: _sk(m, x),
        _clusters,
        ["prediction"],
    ),
    Case(
        "onehot_pipeline",
        [*NUMERIC, "segment"],
        _pipeline,
        lambda m, x: _sk(m, x),
        _classes,
        ["prediction", "c0", "c1"],
    ),
    Case(
        "xgboost",
        NUMERIC,
        lambda x: xgboost.XGBClassifier(n_estimators=20, max_depth=3).fit(x, (x.score > 0) * 1),
        lambda m, x: mlflow.xgboost.log_model(
            m, name="model", signature=infer_signature(x), input_example=x.head(5)
        ),
        _classes,
        ["prediction", "c0", "c1"],
    ),
    Case(
        "lightgbm",
        NUMERIC,
        lambda x: lightgbm.LGBMRegressor(n_estimators=20, verbose=-1).fit(x, x.income + x.age),
        lambda m, x: mlflow.lightgbm.log_model(
            m, name="model", signature=infer_signature(x), input_example=x.head(5)
        ),
        _values,
        ["prediction"],
    ),
    Case(
        "custom_pyfunc",
        NUMERIC,
        lambda x: custom_models.Doubler(),
        _pyfunc_log,
        lambda m, x: [(float(v),) for v in m.predict(None, x)],
        ["prediction"],
    ),
    # Scored by mlrunner (the JVM) from the MOJO the deploy exports.
    Case(
        "h2o_gbm",
        [*NUMERIC, "segment"],
        _h2o_gbm,
        _h2o_log,
        _h2o_classes,
        ["prediction", "no", "yes"],
    ),
]


def submit(server: MLManagerProcess, handler: str, payload: dict[str, Any]) -> dict[str, Any]:
    r = requests.post(
        f"{server.api}/jobs",
        json={"handler_name": handler, "payload": payload},
        auth=ADMIN,
        timeout=30,
    )
    assert r.status_code == 201, r.text
    job_id = r.json()["id"]
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        job = requests.get(f"{server.api}/jobs/{job_id}", auth=ADMIN, timeout=30).json()
        if job["status"] in ("SUCCESS", "FAILURE", "CANCELLED"):
            logs = requests.get(f"{server.api}/jobs/{job_id}/logs", auth=ADMIN, timeout=30)
            job["log"] = "\n".join(line["message"] for line in logs.json()["lines"])
            return dict(job)
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} did not end")


def _assert_rows(got: list[tuple[Any, ...]], expected: list[tuple[Any, ...]]) -> None:
    assert len(got) == len(expected)
    for row, (have, want) in enumerate(zip(got, expected, strict=True)):
        for column, (h, w) in enumerate(zip(have, want, strict=True)):
            if isinstance(w, float):
                assert h == pytest.approx(w, rel=1e-4, abs=1e-5), (row, column, have, want)
            else:
                assert h == w, (row, column, have, want)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_each_model_kind_scores_rows_inserted_by_a_plain_client(
    server: MLManagerProcess, case: Case
) -> None:
    train, new = data(300, 1), data(25, 2)
    x_train, x_new = train[case.columns], new[case.columns]
    model = case.train(x_train)
    with mlflow.start_run():
        info = case.log(model, x_train)
    sqlite = server.db_url.startswith("sqlite")
    schema = "main" if sqlite else "scored"
    table = case.name
    payload = {
        "model_uri": info.model_uri,
        "db_schema": schema,
        "db_table": table,
        "create_model_table": True,
        "primary_key": {"id": "BIGINT"},
        "trigger_mode": case.trigger_mode,
    }
    job = submit(server, "DEPLOY_DATABASE", payload)
    assert job["status"] == "SUCCESS", job["log"]

    rows = [(i, *r) for i, r in enumerate(x_new.itertuples(index=False))]
    columns = ["id", *case.columns]
    insert_rows(server.db_url, table, columns, rows[:1], schema)  # a single-row INSERT
    insert_rows(server.db_url, table, columns, rows[1:], schema)  # a multi-row INSERT

    outputs = ", ".join(c.upper() if sqlite else c for c in case.outputs)
    qualified = table if sqlite else f"{schema}.{table}"
    got = read_rows(server.db_url, f"SELECT {outputs} FROM {qualified} ORDER BY id")
    _assert_rows(got, case.expected(model, x_new))
    run = read_rows(server.db_url, f"SELECT DISTINCT run_id FROM {qualified}")
    assert run == [(info.run_id,)]


def test_a_plain_sqlite3_connection_gets_a_clear_error(server: MLManagerProcess) -> None:
    if not server.db_url.startswith("sqlite"):
        pytest.skip("SQLite only")
    database = server.db_url.removeprefix("sqlite:///")
    conn = sqlite3.connect(database)
    try:
        with pytest.raises(sqlite3.OperationalError, match="no such function: mlmanager_score"):
            conn.execute(
                'INSERT INTO "kmeans" (id, age, income, score) VALUES (1000, 1.0, 2.0, 3.0)'
            )
    finally:
        conn.close()
    # The deployed table is unchanged:
    assert read_rows(server.db_url, "SELECT count(*) FROM kmeans WHERE id = 1000") == [(0,)]


def test_the_deployment_is_listed_and_undeploy_keeps_the_data(
    server: MLManagerProcess, tmp_path: Path
) -> None:
    sqlite = server.db_url.startswith("sqlite")
    schema = "main" if sqlite else "scored"
    listed = requests.get(f"{server.api}/deployments", auth=ADMIN, timeout=30).json()
    kmeans = [d for d in listed["deployments"] if d["name"] == f"{schema}.kmeans"]
    assert [d["status"] for d in kmeans] == ["DEPLOYED"]

    r = requests.delete(f"{server.api}/deployments/{kmeans[0]['id']}", auth=ADMIN, timeout=30)
    assert r.status_code == 202, r.text
    job_id = r.json()["id"]
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        job = requests.get(f"{server.api}/jobs/{job_id}", auth=ADMIN, timeout=30).json()
        if job["status"] in ("SUCCESS", "FAILURE"):
            break
        time.sleep(0.2)
    assert job["status"] == "SUCCESS", job

    qualified = "kmeans" if sqlite else f"{schema}.kmeans"
    insert_rows(server.db_url, "kmeans", ["id", *NUMERIC], [(500, 30.0, 40.0, 0.5)], schema)
    got = read_rows(server.db_url, f"SELECT count(*), count(prediction) FROM {qualified}")
    assert got == [(26, 25)]  # the 25 scored rows are kept; the new one is not scored
    after = requests.get(f"{server.api}/deployments/{kmeans[0]['id']}", auth=ADMIN, timeout=30)
    assert after.json()["status"] == "DELETED"


def test_async_mode_through_the_server_shows_its_backlog(server: MLManagerProcess) -> None:
    if server.db_url.startswith("sqlite"):
        pytest.skip("mode async is for PostgreSQL")
    train, new = data(200, 5)[NUMERIC], data(30, 6)[NUMERIC]
    model = LogisticRegression(max_iter=500).fit(train, _labels(train))
    with mlflow.start_run():
        info = _sk(model, train)
    payload = {
        "model_uri": info.model_uri,
        "db_schema": "scored",
        "db_table": "async_events",
        "create_model_table": True,
        "primary_key": {"id": "BIGINT"},
        "mode": "async",
    }
    job = submit(server, "DEPLOY_DATABASE", payload)
    assert job["status"] == "SUCCESS", job["log"]
    rows = [(i, *r) for i, r in enumerate(new.itertuples(index=False))]
    insert_rows(server.db_url, "async_events", ["id", *NUMERIC], rows, "scored")

    listed = requests.get(f"{server.api}/deployments", auth=ADMIN, timeout=30).json()
    (deployment,) = [d for d in listed["deployments"] if d["name"] == "scored.async_events"]
    url = f"{server.api}/deployments/{deployment['id']}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        details = requests.get(url, auth=ADMIN, timeout=30).json()["details"]
        if details["backlog"]["unscored_rows"] == 0:
            break
        time.sleep(0.2)
    assert details["mode"] == "async" and details["backlog"]["unscored_rows"] == 0
    got = read_rows(server.db_url, "SELECT prediction FROM scored.async_events ORDER BY id")
    assert [r[0] for r in got] == [str(v) for v in model.predict(new)]


def test_a_trigger_dropped_by_hand_shows_as_drift_and_reconcile_puts_it_back(
    server: MLManagerProcess,
) -> None:
    """The record is the desired state: GET /deployments/{id} names what differs from it
    live, another user may not reconcile it, and `mlmanager deployments reconcile ID`
    re-creates the trigger so that inserted rows are scored again."""
    sqlite = server.db_url.startswith("sqlite")
    schema = "main" if sqlite else "scored"
    qualified = "repaired" if sqlite else f"{schema}.repaired"
    train, new = data(200, 7)[NUMERIC], data(10, 8)[NUMERIC]
    model = LogisticRegression(max_iter=500).fit(train, _labels(train))
    with mlflow.start_run():
        info = _sk(model, train)
    payload = {
        "model_uri": info.model_uri,
        "db_schema": schema,
        "db_table": "repaired",
        "create_model_table": True,
        "primary_key": {"id": "BIGINT"},
    }
    job = submit(server, "DEPLOY_DATABASE", payload)
    assert job["status"] == "SUCCESS", job["log"]
    listed = requests.get(f"{server.api}/deployments", auth=ADMIN, timeout=30).json()
    (deployment,) = [d for d in listed["deployments"] if d["name"] == f"{schema}.repaired"]
    url = f"{server.api}/deployments/{deployment['id']}"
    got = requests.get(url, auth=ADMIN, timeout=30).json()
    assert got["drift"] is None, got
    spec = got["spec"]
    assert (spec["target"], spec["db_table"], spec["mode"]) == ("database", "repaired", "sync")
    assert got["details"]["trigger"] == spec["trigger"]  # the old field, for old clients

    trigger = spec["trigger"]
    on = "" if sqlite else f" ON {qualified}"
    _execute(server.db_url, f'DROP TRIGGER "{trigger}"{on}')
    assert requests.get(url, auth=ADMIN, timeout=30).json()["drift"] == [
        f"trigger {trigger} missing"
    ]
    rows = [(i, *r) for i, r in enumerate(new.itertuples(index=False))]
    insert_rows(server.db_url, "repaired", ["id", *NUMERIC], rows[:5], schema)
    assert read_rows(server.db_url, f"SELECT count(prediction) FROM {qualified}") == [(0,)]

    server.create_user("mallory", "mallory-password-1")
    theirs = requests.post(
        f"{server.api}/jobs",
        json={"handler_name": "RECONCILE", "payload": {"deployment_id": deployment["id"]}},
        auth=("mallory", "mallory-password-1"),
        timeout=30,
    )
    assert theirs.status_code == 404, theirs.text

    env = clean_environment()
    env.update(
        MLFLOW_TRACKING_URI=server.url,
        MLFLOW_TRACKING_USERNAME=ADMIN[0],
        MLFLOW_TRACKING_PASSWORD=ADMIN[1],
        PYTHONPATH=str(Path(__file__).parents[2]),
    )
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "mlmanager",
            "deployments",
            "reconcile",
            str(deployment["id"]),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "SUCCESS" in proc.stderr and "repaired: create the" in proc.stdout, proc.stdout
    assert requests.get(url, auth=ADMIN, timeout=30).json()["drift"] is None

    insert_rows(server.db_url, "repaired", ["id", *NUMERIC], rows[5:], schema)
    got_rows = read_rows(server.db_url, f"SELECT id, prediction FROM {qualified} ORDER BY id")
    expected = [str(v) for v in model.predict(new)]
    assert [r[1] for r in got_rows[5:]] == expected[5:]
    assert all(r[1] is None for r in got_rows[:5])  # rows inserted while it drifted stay so


def _execute(url: str, sql: str) -> None:
    """Change the database behind ML Manager's back, as a DBA would."""
    if url.startswith("sqlite"):
        with contextlib.closing(sqlite3.connect(sqlite_path(url))) as lite:
            lite.execute(sql)
            lite.commit()
        return
    with plain_pg(url) as conn:
        conn.execute(sql)
