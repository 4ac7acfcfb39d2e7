"""Keras 3 models (TensorFlow backend) deployed onto PostgreSQL and SQLite through ONNX.

Each model is trained once here on data made here and saved with ``mlflow.keras``;
its own predictions (``model.predict``) on the new rows are taken then. It is logged
to a running server (``mlmanager up``), deployed by its worker, and every prediction
of the inserted rows is compared with ``model.predict``: labels exactly,
probabilities and values within 1e-5 (ONNX computes in float32 as TensorFlow does,
in another order).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
import pytest
from sqlalchemy import text

from shared.errors import InvalidPayload
from shared.migrations import upgrade
from tests.support.engines import EngineFor, settings_for
from tests.support.indb import insert_rows, read_rows, run_job
from tests.support.kinds import (
    Expected,
    deploy_and_compare,
    deploy_without_extra,
    execute,
    logged_locally,
    logged_to,
    schema_of,
    served_predictions,
)
from tests.support.mlflow_store import INPUT_EXAMPLE_WARNING, MLFLOW_SQLITE_STORE_WARNING
from tests.support.servers import MLManagerProcess, running_server

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
keras = pytest.importorskip("keras")

pytestmark = [
    pytest.mark.postgres,
    MLFLOW_SQLITE_STORE_WARNING,
    INPUT_EXAMPLE_WARNING,
    # Keras' own code under numpy 2.4 (saving a variable).
    pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy keyword"),
    pytest.mark.filterwarnings("ignore:.*Any type hint is inferred as AnyType"),
]
TOLERANCE = 1e-5
VOCABULARY = 4


def tabular(rows: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "age": rng.uniform(18, 90, rows),
            "income": rng.normal(50.0, 15.0, rows),
            "score": rng.uniform(-1.0, 1.0, rows),
            "region": rng.integers(0, VOCABULARY, rows).astype(np.int64),
        }
    )


def dense_classifier() -> tuple[Any, pd.DataFrame]:
    """Three numeric features -> three classes (softmax)."""
    keras.utils.set_random_seed(1)
    train = tabular(300, 1)[["age", "income", "score"]]
    target = np.digitize(train.score + (train.income - 50) / 30, [-0.5, 0.5])
    model = keras.Sequential(
        [
            keras.Input(shape=(3,)),
            keras.layers.Rescaling([1 / 50, 1 / 50, 1.0]),
            keras.layers.Dense(8, activation="relu"),
            keras.layers.Dense(3, activation="softmax"),
        ]
    )
    model.compile("adam", "sparse_categorical_crossentropy")
    model.fit(train.to_numpy(np.float32), target, epochs=3, verbose=0)
    return model, train


def embedding_model(binary: bool) -> tuple[Any, pd.DataFrame]:
    """A functional model of two inputs: three numbers and a category index (embedded)."""
    keras.utils.set_random_seed(2)
    train = tabular(300, 2)
    numbers = keras.Input(shape=(3,), name="numbers")
    region = keras.Input(shape=(1,), name="region", dtype="int64")
    embedded = keras.layers.Flatten()(keras.layers.Embedding(VOCABULARY, 3)(region))
    hidden = keras.layers.Dense(6, activation="tanh")(
        keras.layers.Concatenate()([keras.layers.Rescaling(1 / 50)(numbers), embedded])
    )
    head = keras.layers.Dense(1, activation="sigmoid" if binary else None)(hidden)
    model = keras.Model([numbers, region], head)
    model.compile("adam", "binary_crossentropy" if binary else "mse")
    x = [train[["age", "income", "score"]].to_numpy(np.float32), train[["region"]].to_numpy()]
    y = (train.score > 0).astype(np.float32) if binary else train.income / 50
    model.fit(x, y.to_numpy(), epochs=2, verbose=0)
    return model, train


NUMBERS = ["age", "income", "score"]


@dataclass(frozen=True)
class Trained:
    """A trained model saved with ``mlflow.keras``, its training rows (the reference table
    of its deploys) and its columns."""

    model: Any
    path: Path
    train: pd.DataFrame
    columns: list[str]


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Trained]:
    """The models of the module, trained and saved once. The deploys take their sample
    rows and columns from a reference table (the flavor logs a tensor signature, with no
    column names, and only the dense model has an input example)."""
    found = {}
    for name, (model, train) in {
        "dense": dense_classifier(),
        "binary": embedding_model(binary=True),
        "regression": embedding_model(binary=False),
    }.items():
        path = tmp_path_factory.mktemp("keras") / name
        example = train.head(5) if name == "dense" else None  # (for mlmanager serve)
        # MLflow 3.17's keras flavor writes the example before it makes the directory.
        path.mkdir()
        mlflow.keras.save_model(model, str(path), input_example=example, pip_requirements=[])
        found[name] = Trained(model, path, train, list(train.columns))
    return found


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[MLManagerProcess]:
    with running_server(request, tmp_path_factory, request.param, "kinds") as proc:
        yield proc


def own_predictions(model: Any, frame: pd.DataFrame) -> np.ndarray:
    if len(model.inputs) == 1:
        return np.asarray(model.predict(frame.to_numpy(np.float32), verbose=0))
    feeds = [frame[NUMBERS].to_numpy(np.float32), frame[["region"]].to_numpy()]
    return np.asarray(model.predict(feeds, verbose=0))


def make_reference(url: str, schema: str, name: str, frame: pd.DataFrame) -> None:
    """A reference table holding the training rows: the deploy's columns and sample rows."""
    sqlite = url.startswith("sqlite")
    types = {c: "BIGINT" if frame[c].dtype.kind == "i" else "DOUBLE PRECISION" for c in frame}
    if not sqlite:
        execute(url, f"CREATE SCHEMA IF NOT EXISTS {schema}")
    columns = ", ".join(f"{c} {t}" for c, t in types.items())
    table = name if sqlite else f"{schema}.{name}"
    execute(url, f"CREATE TABLE {table} (id BIGINT PRIMARY KEY, {columns})")
    rows = [(i, *r) for i, r in enumerate(frame.astype(object).values)]
    insert_rows(url, name, ["id", *frame.columns], rows, schema)


def deployed_and_compared(
    server: MLManagerProcess,
    trained: Trained,
    table: str,
    rows: list[tuple[Any, ...]],
    expected: list[Expected],
    outputs: list[str],
) -> None:
    reference = f"{table}_reference"
    make_reference(server.db_url, schema_of(server), reference, trained.train.head(200))
    deploy_and_compare(
        server,
        logged_to(server, trained.path),
        table,
        trained.columns,
        rows,
        expected,
        outputs,
        TOLERANCE,
        reference_schema=schema_of(server),
        reference_table=reference,
    )


def classes(probabilities: np.ndarray) -> list[Expected]:
    return [(str(int(p.argmax())), *p.tolist()) for p in probabilities]


def test_a_dense_classifier_gives_the_label_and_probabilities_of_predict(
    models: dict[str, Trained], server: MLManagerProcess
) -> None:
    trained = models["dense"]
    new = tabular(40, 3)[NUMBERS]
    rows = [(i, *r) for i, r in enumerate(new.values)]
    rows.append((100, 30.0, None, 0.2))
    # NaN through the network: the model's own prediction is NaN, the row's is NULL.
    expected = [*classes(own_predictions(trained.model, new)), (None, None, None, None)]
    deployed_and_compared(
        server, trained, "dense", rows, expected, ["prediction", "C0", "C1", "C2"]
    )


def test_a_two_input_model_with_an_embedding_scores_unseen_and_null_categories_as_null(
    models: dict[str, Trained], server: MLManagerProcess
) -> None:
    new = tabular(30, 4)
    rows = [(i, *r) for i, r in enumerate(new.astype(object).values)]
    odd = [
        (50, 40.0, 60.0, 0.5, VOCABULARY),
        (51, 40.0, 60.0, 0.5, None),
        (52, 40.0, 60.0, 0.5, -1),
    ]
    binary = models["binary"]
    p = own_predictions(binary.model, new).reshape(-1)
    expected = [(str(int(v > 0.5)), 1 - v, v) for v in p.tolist()]
    expected += [(None, None, None)] * 3
    deployed_and_compared(
        server, binary, "binary", rows + odd, expected, ["prediction", "C0", "C1"]
    )
    regression = models["regression"]
    values = own_predictions(regression.model, new).reshape(-1).tolist()
    expected = [(v,) for v in values] + [(None,)] * 3
    deployed_and_compared(server, regression, "regression", rows + odd, expected, ["prediction"])
    # model.predict refuses these indices; the database gives NULL, not an error.
    with pytest.raises(Exception):  # noqa: B017  (TensorFlow's own error type)
        binary.model.predict([np.zeros((1, 3), np.float32), np.array([[VOCABULARY]])], verbose=0)


def test_an_onnx_export_that_disagrees_is_refused_before_the_table_exists(
    models: dict[str, Trained],
    sqlite_url: str,
    engine_for: EngineFor,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A faulty exporter simulated in this process; the refusal comes before any database
    work (checked on SQLite)."""
    from onnx import TensorProto, helper

    from shared.scoring import keras_model

    exported = keras_model._export

    def off_by_a_little(estimator: Any) -> Any:
        proto = exported(estimator)
        graph = proto.graph  # every output 1% too large
        raw = graph.output[0].name
        graph.initializer.append(helper.make_tensor("scale", TensorProto.FLOAT, [], [1.01]))
        graph.node.append(helper.make_node("Mul", [raw, "scale"], ["scaled"]))
        graph.output[0].name = "scaled"
        return proto

    monkeypatch.setattr(keras_model, "_export", off_by_a_little)
    engine = engine_for(sqlite_url)
    upgrade(engine)
    trained = models["dense"]
    make_reference(sqlite_url, "main", "wrong_reference", trained.train.head(200))
    with logged_locally(trained.path, tmp_path) as uri:
        payload = {
            "model_uri": uri,
            "db_schema": "main",
            "db_table": "wrong",
            "create_model_table": True,
            "primary_key": {"id": "INTEGER"},
            "reference_schema": "main",
            "reference_table": "wrong_reference",
        }
        with pytest.raises(InvalidPayload, match="ONNX does not reproduce") as refused:
            run_job(engine, settings_for(sqlite_url, tmp_path), "DEPLOY_DATABASE", payload)
    print(refused.value.message)
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM deployments")).scalar_one() == 0
    tables = read_rows(sqlite_url, "SELECT name FROM sqlite_master WHERE type = 'table'")
    assert ("wrong",) not in tables


def test_a_worker_without_tensorflow_fails_the_deploy_once_naming_the_extra(
    models: dict[str, Trained], sqlite_url: str, engine_for: EngineFor, tmp_path: Path
) -> None:
    engine = engine_for(sqlite_url)
    upgrade(engine)
    job = deploy_without_extra("tensorflow", models["dense"].path, sqlite_url, engine, tmp_path)
    assert (job.status, job.attempt) == ("FAILURE", 1), job
    assert job.error is not None and "pip install 'mlmanager[keras]'" in job.error


def test_mlmanager_serve_answers_the_labels_of_predict(
    models: dict[str, Trained], tmp_path: Path
) -> None:
    """The serving process (mlrunner on the ONNX model) of the dense classifier."""
    trained = models["dense"]
    new = tabular(25, 5)[NUMBERS]
    with logged_locally(trained.path, tmp_path) as uri:
        predictions = served_predictions(uri, new, tmp_path)
    expected = own_predictions(trained.model, new).argmax(axis=1)
    assert [str(p) for p in predictions] == [str(v) for v in expected]
