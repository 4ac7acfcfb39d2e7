"""mode: async on a real PostgreSQL with real worker processes: a PL/pgSQL trigger
notifies, the workers' scorers claim the unscored rows, score them and write them back.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow.models import infer_signature
from sklearn.linear_model import LogisticRegression
from sqlalchemy import Engine, text
from sqlalchemy.engine import make_url

from shared.deployments import DatabaseDeploymentSpec, DeploymentStore
from shared.errors import NotAuthorized
from shared.migrations import upgrade
from shared.scoring.asyncmode import AsyncTable, backlog
from shared.settings import Settings
from tests.support import custom_models
from tests.support.engines import EngineFor, settings_for
from tests.support.indb import features, plain_pg, run_job
from tests.support.mlflow_store import (
    INPUT_EXAMPLE_WARNING,
    MLFLOW_SQLITE_STORE_WARNING,
    log_sklearn,
)
from tests.support.pg import PostgresServer
from tests.support.workers import WorkerProcess, wait_until

pytestmark = [
    pytest.mark.postgres,
    MLFLOW_SQLITE_STORE_WARNING,
    INPUT_EXAMPLE_WARNING,
    pytest.mark.filterwarnings("ignore:.*Passing a Python object as `python_model`"),
]


@pytest.fixture
def pg(pg_url: str, engine_for: EngineFor, tmp_path: Path) -> tuple[str, Engine, Settings]:
    engine = engine_for(pg_url)
    upgrade(engine)
    with engine.begin() as conn:
        conn.execute(text("CREATE SCHEMA apps"))
        conn.execute(
            text(
                "CREATE TABLE apps.events (id BIGINT PRIMARY KEY, age DOUBLE PRECISION, "
                "income DOUBLE PRECISION, score DOUBLE PRECISION)"
            )
        )
    return pg_url, engine, settings_for(pg_url, tmp_path)


@pytest.fixture
def workers(pg: tuple[str, Engine, Settings], tmp_path: Path) -> Iterator[list[WorkerProcess]]:
    started: list[WorkerProcess] = []
    yield started
    for worker in started:
        worker.stop()


def start(pg: tuple[str, Engine, Settings], tmp_path: Path, started: list[WorkerProcess]) -> Any:
    worker = WorkerProcess(
        pg[0], tmp_path, f"scorer{len(started)}", async_scoring_sweep_seconds=0.5
    )
    started.append(worker)
    worker.wait_healthy()
    return worker


def log_classifier() -> tuple[Any, str]:
    train = features(300, 21)
    model = LogisticRegression(max_iter=500).fit(train, train.score > 0)
    return model, log_sklearn(model, train)


def deploy(pg: tuple[str, Engine, Settings], uri: str, **extra: Any) -> list[str]:
    _, engine, settings = pg
    payload = {"model_uri": uri, "db_schema": "apps", "db_table": "events", "mode": "async"}
    return run_job(engine, settings, "DEPLOY_DATABASE", payload | extra)


def insert(url: str, frame: Any, start_id: int = 0) -> None:
    rows = [(start_id + i, *r) for i, r in enumerate(frame.itertuples(index=False))]
    with plain_pg(url) as conn:
        marks = ", ".join("(%s, %s, %s, %s)" for _ in rows)
        conn.execute(
            f"INSERT INTO apps.events (id, age, income, score) VALUES {marks}",
            [v for row in rows for v in row],
        )


def unscored(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(
            conn.execute(text("SELECT count(*) FROM apps.events WHERE prediction IS NULL")).scalar()
            or 0
        )


def predictions(engine: Engine) -> list[tuple[Any, ...]]:
    with engine.connect() as conn:
        return [
            tuple(r)
            for r in conn.execute(text("SELECT prediction, c0, c1 FROM apps.events ORDER BY id"))
        ]


def scored_total(worker: WorkerProcess) -> int:
    match = re.search(r"^mlmanager_async_rows_scored_total (\d+)$", worker.metrics(), re.M)
    assert match, worker.metrics()
    return int(match.group(1))


def test_rows_are_scored_soon_after_insert_and_rows_inserted_while_no_worker_ran_too(
    tracking: None, pg: tuple[str, Engine, Settings], workers: list[WorkerProcess], tmp_path: Path
) -> None:
    url, engine, _ = pg
    model, uri = log_classifier()
    lines = deploy(pg, uri)
    assert any("async" in line for line in lines)
    early = features(30, 22)
    insert(url, early)  # no worker runs yet: stays unscored
    assert unscored(engine) == 30

    start(pg, tmp_path, workers)
    wait_until(lambda: unscored(engine) == 0, 30, "rows inserted before the worker started")
    later = features(50, 23)
    insert(url, later, start_id=100)
    wait_until(lambda: unscored(engine) == 0, 30, "rows inserted while the worker listens")

    x = pd.concat([early, later])
    got = predictions(engine)
    assert [g[0] for g in got] == [str(v) for v in model.predict(x)]
    np.testing.assert_allclose([g[1:] for g in got], model.predict_proba(x), atol=1e-6)
    spec = DeploymentStore(engine).get(1).spec
    assert isinstance(spec, DatabaseDeploymentSpec)
    with engine.connect() as conn:
        assert backlog(conn, AsyncTable.from_spec(1, spec))["unscored_rows"] == 0
    recorded = lambda: _details(engine).get("scoring_lag", {}).get("rows", 0)  # noqa: E731
    wait_until(lambda: recorded() == 80, 10, "the lag of every scored row recorded")
    lag = _details(engine)["scoring_lag"]
    assert 0 <= lag["p50_ms"] <= lag["p99_ms"]


def _details(engine: Engine) -> dict[str, Any]:
    """The deployment's spec and stats in the one untyped form older clients read."""
    (deployment,) = DeploymentStore(engine).list()
    return deployment.details


def test_two_workers_never_score_a_row_twice(
    tracking: None, pg: tuple[str, Engine, Settings], workers: list[WorkerProcess], tmp_path: Path
) -> None:
    url, engine, _ = pg
    _, uri = log_classifier()
    deploy(pg, uri)
    first, second = start(pg, tmp_path, workers), start(pg, tmp_path, workers)
    total = 0
    for n in range(40):
        batch = features(50, 100 + n)
        insert(url, batch, start_id=total)
        total += len(batch)
    wait_until(lambda: unscored(engine) == 0, 60, "every row scored")
    assert scored_total(first) + scored_total(second) == total
    assert scored_total(first) > 0 and scored_total(second) > 0


def test_a_row_the_model_refuses_is_counted_and_logged_and_the_others_are_scored(
    tracking: None, pg: tuple[str, Engine, Settings], workers: list[WorkerProcess], tmp_path: Path
) -> None:
    url, engine, _ = pg
    train = features(50, 31).assign(score=lambda f: f.score.clip(-0.8, 0.8))
    picky = custom_models.Picky()
    with mlflow.start_run():
        info = mlflow.pyfunc.log_model(
            name="model",
            python_model=picky,
            signature=infer_signature(train, picky.predict(None, train)),
            input_example=train.head(5),
            pip_requirements=[],
        )
    deploy(pg, str(info.model_uri))
    rows = features(20, 32).assign(score=lambda f: f.score.clip(-0.8, 0.8))
    rows.loc[7, "score"] = 0.95
    worker = start(pg, tmp_path, workers)
    insert(url, rows)
    wait_until(lambda: unscored(engine) == 1, 30, "all rows but the refused one scored")
    wait_until(lambda: "scoring_errors" in _details(engine), 10, "the error counted")
    assert _details(engine)["scoring_errors"] == 1
    assert "score above 0.9" in _details(engine)["last_scoring_error"]
    assert "row (7,) cannot be scored" in worker.log.read_text()
    with engine.connect() as conn:
        values = conn.execute(text("SELECT id, prediction FROM apps.events ORDER BY id")).all()
    expected = rows.income * 2.0 + rows.score  # what Picky gives where it scores
    for (row_id, value), want in zip(values, expected, strict=True):
        assert (value is None) if row_id == 7 else value == pytest.approx(want), row_id


def test_undeploy_stops_scoring(
    tracking: None, pg: tuple[str, Engine, Settings], workers: list[WorkerProcess], tmp_path: Path
) -> None:
    url, engine, settings = pg
    _, uri = log_classifier()
    deploy(pg, uri)
    start(pg, tmp_path, workers)
    insert(url, features(10, 41))
    wait_until(lambda: unscored(engine) == 0, 30, "scored while deployed")
    run_job(
        engine,
        settings,
        "UNDEPLOY_DATABASE",
        {"model_uri": uri, "db_schema": "apps", "db_table": "events"},
    )
    insert(url, features(10, 42), start_id=100)
    time.sleep(2.0)  # four sweeps of the worker
    assert unscored(engine) == 10


def test_auto_mode_scores_asynchronously_where_pl_python_cannot_be_installed(
    tracking: None,
    pg_url: str,
    pg_server: PostgresServer,
    engine_for: EngineFor,
    tmp_path: Path,
) -> None:
    """A worker whose database user is no superuser (like on a managed PostgreSQL)."""
    database = make_url(pg_url).database
    with pg_server.connect(database) as admin:
        admin.execute("DROP ROLE IF EXISTS deployer")
        admin.execute("CREATE ROLE deployer LOGIN PASSWORD 'deployer-pw'")
        admin.execute(f'GRANT CREATE ON DATABASE "{database}" TO deployer')
    url = make_url(pg_url).set(username="deployer", password="deployer-pw")
    deployer_url = url.render_as_string(hide_password=False)
    engine = engine_for(deployer_url)
    upgrade(engine)
    with engine.begin() as conn:
        conn.execute(text("CREATE SCHEMA apps"))
    _, uri = log_classifier()
    payload = {
        "model_uri": uri,
        "db_schema": "apps",
        "db_table": "auto",
        "create_model_table": True,
        "primary_key": {"id": "BIGINT"},
    }
    lines = run_job(engine, settings_for(deployer_url, tmp_path), "DEPLOY_DATABASE", payload)
    assert any("scoring asynchronously (mode async)" in line for line in lines), lines
    assert any("superuser" in line for line in lines)
    spec = DeploymentStore(engine).list()[0].spec
    assert spec is not None and spec.mode == "async"
    with pytest.raises(NotAuthorized, match="superuser"):
        payload |= {"db_table": "forced", "mode": "sync"}
        run_job(engine, settings_for(deployer_url, tmp_path), "DEPLOY_DATABASE", payload)


def test_replace_scores_new_rows_with_the_new_model(
    tracking: None, pg: tuple[str, Engine, Settings], workers: list[WorkerProcess], tmp_path: Path
) -> None:
    url, engine, _ = pg
    _, a_uri = log_classifier()
    train = features(300, 51)
    b = LogisticRegression(max_iter=500).fit(train, train.income > 50)
    b_uri = log_sklearn(b, train)
    deploy(pg, a_uri)
    start(pg, tmp_path, workers)
    insert(url, features(10, 52))
    wait_until(lambda: unscored(engine) == 0, 30, "scored by A")
    deploy(pg, b_uri, replace=True)
    new = features(20, 53)
    insert(url, new, start_id=100)
    wait_until(lambda: unscored(engine) == 0, 30, "scored by B")
    with engine.connect() as conn:
        got = conn.execute(text("SELECT prediction FROM apps.events WHERE id >= 100 ORDER BY id"))
        assert [r[0] for r in got] == [str(v) for v in b.predict(new)]
