"""Keras 3 models (TensorFlow backend) deployed onto PostgreSQL and SQLite through ONNX.

Each model is trained here on data made here, logged with ``mlflow.keras``, deployed
with the worker's DEPLOY_DATABASE handler, and every prediction of the inserted rows
is compared with ``model.predict``: labels exactly, probabilities and values within
1e-5 (ONNX computes in float32 as TensorFlow does, in another order).
"""

from __future__ import annotations

import os
from typing import Any

import mlflow
import numpy as np
import pandas as pd
import pytest
from sqlalchemy import Engine, text

from shared.errors import InvalidPayload
from shared.settings import Settings
from tests.support.indb import insert_rows, read_rows, run_job, schema_for
from tests.support.mlflow_store import INPUT_EXAMPLE_WARNING, MLFLOW_SQLITE_STORE_WARNING

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


def log_keras(model: Any) -> str:
    """``mlflow.keras.log_model`` as it works: a tensor signature (no column names) and no
    input example (MLflow 3.17's keras flavor fails to save one), so the deploys take
    their sample rows and columns from a reference table."""
    with mlflow.start_run():
        info = mlflow.keras.log_model(model, name="model", pip_requirements=[])
    return str(info.model_uri)


def make_reference(url: str, engine: Engine, name: str, frame: pd.DataFrame) -> None:
    """A reference table holding the training rows: the deploy's columns and sample rows."""
    schema = schema_for(url)
    types = {c: "BIGINT" if frame[c].dtype.kind == "i" else "DOUBLE PRECISION" for c in frame}
    with engine.begin() as conn:
        if not url.startswith("sqlite"):
            conn.execute(text(f"CREATE SCHEMA IF NOT EXISTS {schema}"))
        columns = ", ".join(f"{c} {t}" for c, t in types.items())
        conn.execute(text(f"CREATE TABLE {table_of(url, name)} (id BIGINT PRIMARY KEY, {columns})"))
    rows = [(i, *r) for i, r in enumerate(frame.astype(object).values)]
    insert_rows(url, name, ["id", *frame.columns], rows, schema)


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


@pytest.fixture(scope="module")
def models(tracking: None) -> dict[str, tuple[Any, pd.DataFrame, str]]:
    """The models of the module, trained and logged once."""
    found = {}
    for name, (model, train) in {
        "dense": dense_classifier(),
        "binary": embedding_model(binary=True),
        "regression": embedding_model(binary=False),
    }.items():
        found[name] = (model, train, log_keras(model))
    return found


def own_predictions(model: Any, frame: pd.DataFrame) -> np.ndarray:
    if len(model.inputs) == 1:
        return np.asarray(model.predict(frame.to_numpy(np.float32), verbose=0))
    feeds = [frame[["age", "income", "score"]].to_numpy(np.float32), frame[["region"]].to_numpy()]
    return np.asarray(model.predict(feeds, verbose=0))


def deploy(
    url: str, engine: Engine, settings: Settings, uri: str, table: str, train: pd.DataFrame
) -> list[str]:
    make_reference(url, engine, f"{table}_reference", train.head(200))
    return run_job(
        engine,
        settings,
        "DEPLOY_DATABASE",
        {
            "model_uri": uri,
            "db_schema": schema_for(url),
            "db_table": table,
            "create_model_table": True,
            "primary_key": {"id": "INTEGER"},
            "reference_schema": schema_for(url),
            "reference_table": f"{table}_reference",
        },
    )


def table_of(url: str, table: str) -> str:
    return table if url.startswith("sqlite") else f"{schema_for(url)}.{table}"


def test_a_dense_classifier_gives_the_label_and_probabilities_of_predict(
    models: dict[str, Any], deployed_db: tuple[str, Engine, Settings]
) -> None:
    url, engine, settings = deployed_db
    model, train, uri = models["dense"]
    deploy(url, engine, settings, uri, "dense", train)
    new = tabular(40, 3)[["age", "income", "score"]]
    columns = ["id", "age", "income", "score"]
    # One row alone, then many in one statement, then a row with a NULL.
    insert_rows(url, "dense", columns, [(0, *new.iloc[0])], schema_for(url))
    insert_rows(
        url, "dense", columns, [(i, *r) for i, r in enumerate(new.values) if i], schema_for(url)
    )
    insert_rows(url, "dense", columns, [(100, 30.0, None, 0.2)], schema_for(url))

    got = read_rows(
        url, f"SELECT id, prediction, C0, C1, C2 FROM {table_of(url, 'dense')} ORDER BY id"
    )
    expected = own_predictions(model, new)
    assert [r[1] for r in got[:40]] == [str(i) for i in expected.argmax(axis=1)]
    np.testing.assert_allclose([r[2:] for r in got[:40]], expected, atol=TOLERANCE)
    # NaN through the network: the model's own prediction is NaN, the row's is NULL.
    assert got[40] == (100, None, None, None, None)


def test_a_two_input_model_with_an_embedding_scores_unseen_and_null_categories_as_null(
    models: dict[str, Any], deployed_db: tuple[str, Engine, Settings]
) -> None:
    url, engine, settings = deployed_db
    columns = ["id", "age", "income", "score", "region"]
    new = tabular(30, 4)
    rows = [(i, *r) for i, r in enumerate(new.astype(object).values)]
    odd = [
        (50, 40.0, 60.0, 0.5, VOCABULARY),
        (51, 40.0, 60.0, 0.5, None),
        (52, 40.0, 60.0, 0.5, -1),
    ]
    for name, query in (
        ("binary", "SELECT id, prediction, C0, C1 FROM {} ORDER BY id"),
        ("regression", "SELECT id, prediction FROM {} ORDER BY id"),
    ):
        model, train, uri = models[name]
        deploy(url, engine, settings, uri, name, train)
        insert_rows(url, name, columns, rows[:1], schema_for(url))
        insert_rows(url, name, columns, rows[1:] + odd, schema_for(url))
        got = read_rows(url, query.format(table_of(url, name)))
        expected = own_predictions(model, new).reshape(-1)
        if name == "binary":
            assert [r[1] for r in got[:30]] == [str(int(p > 0.5)) for p in expected]
            np.testing.assert_allclose([r[3] for r in got[:30]], expected, atol=TOLERANCE)
            np.testing.assert_allclose([r[2] for r in got[:30]], 1 - expected, atol=TOLERANCE)
        else:
            np.testing.assert_allclose([r[1] for r in got[:30]], expected, atol=TOLERANCE)
        # model.predict refuses these indices; the database gives NULL, not an error.
        assert [r[1] for r in got[30:]] == [None, None, None]
        with pytest.raises(Exception):  # noqa: B017  (TensorFlow's own error type)
            model.predict([np.zeros((1, 3), np.float32), np.array([[VOCABULARY]])], verbose=0)


def test_an_onnx_export_that_disagrees_is_refused_before_the_table_exists(
    models: dict[str, Any],
    deployed_db: tuple[str, Engine, Settings],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    url, engine, settings = deployed_db
    from shared.scoring import keras_model

    exported = keras_model._export

    def off_by_a_little(estimator: Any) -> Any:
        proto = exported(estimator)
        # Simulate a faulty exporter: every output 1% too large.
        from onnx import TensorProto, helper

        graph = proto.graph
        raw = graph.output[0].name
        graph.initializer.append(helper.make_tensor("scale", TensorProto.FLOAT, [], [1.01]))
        graph.node.append(helper.make_node("Mul", [raw, "scale"], ["scaled"]))
        graph.output[0].name = "scaled"
        return proto

    monkeypatch.setattr(keras_model, "_export", off_by_a_little)
    _, train, uri = models["dense"]
    with pytest.raises(InvalidPayload, match="ONNX does not reproduce") as refused:
        deploy(url, engine, settings, uri, "wrong", train)
    print(refused.value.message)
    with engine.connect() as conn:
        tables = conn.execute(text("SELECT count(*) FROM deployments")).scalar_one()
    assert tables == 0
    assert "'wrong'" not in str(read_rows(url, _tables_query(url)))


def _tables_query(url: str) -> str:
    if url.startswith("sqlite"):
        return "SELECT name FROM sqlite_master WHERE type = 'table'"
    return "SELECT table_name FROM information_schema.tables WHERE table_schema = 'apps'"
