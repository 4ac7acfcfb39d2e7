"""DEPLOY_DATABASE / UNDEPLOY_DATABASE run in this process against real databases.

Real PostgreSQL with PL/Python (and SQLite); the handler code is the worker's,
called step by step so that failures can be injected between plan steps. The
flow through the running server and worker is in ``test_deploy_database_flow``.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pytest
from mlflow.models import infer_signature
from sklearn.linear_model import LogisticRegression
from sqlalchemy import Engine, text

from shared.migrations import upgrade
from shared.settings import Settings
from tests.conftest import EngineFor, settings_for
from tests.indb import features, insert_rows, read_rows, run_job

with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message=".*Any type hint is inferred as AnyType")
    import mlflow.pyfunc

pytestmark = [
    pytest.mark.postgres,
    # MLflow's SQLite tracking store (the models' home in these tests) uses it.
    pytest.mark.filterwarnings(
        "ignore:The ``noload`` loader strategy is deprecated:sqlalchemy.exc.SADeprecationWarning"
    ),
    # MLflow saving an input example under pandas 3 (it compares an index with a range).
    pytest.mark.filterwarnings("ignore:Operation with range is deprecated"),
]


@pytest.fixture(scope="module")
def tracking(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    root = tmp_path_factory.mktemp("mlflow")
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(f"sqlite:///{root / 'mlflow.db'}")
    experiment = mlflow.create_experiment("indb", artifact_location=(root / "art").as_uri())
    mlflow.set_experiment(experiment_id=experiment)
    yield
    mlflow.set_tracking_uri(previous)


def log_sklearn(model: Any, frame: Any) -> str:
    with mlflow.start_run():
        info = mlflow.sklearn.log_model(
            model,
            name="model",
            signature=infer_signature(frame),
            input_example=frame.head(5),
            pip_requirements=[],
        )
    return str(info.model_uri)


@pytest.fixture
def deployed_db(db_url: str, engine_for: EngineFor, tmp_path: Path) -> tuple[str, Engine, Settings]:
    engine = engine_for(db_url)
    upgrade(engine)
    return db_url, engine, settings_for(db_url, tmp_path)


def schema_for(url: str) -> str:
    return "main" if url.startswith("sqlite") else "apps"


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
