"""Spark ML PipelineModels deployed onto PostgreSQL and SQLite through ONNX (onnxmltools,
with our converters for the stages it gets wrong: shared/scoring/spark_onnx.py).

The pipelines (one per final stage, every supported stage among them) are trained
once here on a local Spark session, on data made here, saved with ``mlflow.spark``
and converted to ONNX as the build converts them; Spark's own predictions
(``transform``) on the new rows are taken then. Every pipeline's ONNX model is
compared with Spark row by row; four are also logged to a running server
(``mlmanager up``) and deployed by its worker, two on SQLite and two on PostgreSQL
(one in async mode), and every inserted row's prediction is compared with Spark's.
Labels and clusters exactly, probabilities and values within 1e-4 (the ONNX model
computes in float32, Spark in double). A deploy starts Spark in the worker (over a
minute on a loaded machine), hence four, not all: the database runs the same ONNX
model the in-process comparison runs.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow.models import infer_signature
from sqlalchemy import text

from shared.errors import InvalidPayload
from shared.migrations import upgrade
from shared.scoring.kinds import Column, ModelKind, SqlType
from tests.support.engines import EngineFor, settings_for
from tests.support.indb import read_rows, run_job
from tests.support.kinds import (
    Expected,
    assert_predictions,
    deploy,
    deploy_and_compare,
    deploy_without_extra,
    logged_locally,
    logged_to,
    served_predictions,
)
from tests.support.mlflow_store import INPUT_EXAMPLE_WARNING, MLFLOW_SQLITE_STORE_WARNING
from tests.support.servers import MLManagerProcess, running_server

pytest.importorskip("pyspark")

pytestmark = [
    pytest.mark.postgres,
    MLFLOW_SQLITE_STORE_WARNING,
    INPUT_EXAMPLE_WARNING,
    pytest.mark.filterwarnings("ignore:PySpark does not yet fully support pandas"),
    pytest.mark.filterwarnings("ignore::DeprecationWarning:pyspark"),
    pytest.mark.filterwarnings("ignore:.*Any type hint is inferred as AnyType"),
    pytest.mark.filterwarnings("ignore:divide by zero:RuntimeWarning"),
]
TOLERANCE = 1e-4
ORDINARY = 20
COLUMNS = ["a", "b", "color"]
PIPELINES = [
    "binary_lr",
    "multinomial_lr",
    "gbt_classifier",
    "forest_classifier",
    "tree_classifier",
    "linear_regression",
    "tree_regressor",
    "forest_regressor",
    "gbt_regressor",
    "kmeans",
]


def rows(count: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "a": rng.normal(0.0, 1.0, count),
            "b": rng.normal(5.0, 10.0, count),
            "color": rng.choice(["red", "green", "blue"], count).astype(object),
            "k": np.ones(count),  # a constant column
        }
    )


def training(spark: Any) -> Any:
    frame = rows(200, 1)
    noise = np.random.default_rng(2).normal(0.0, 0.7, len(frame))
    signal = frame.a + frame.b / 10 + (frame.color == "red") + noise
    frame["binary"] = (signal > 1.0).astype(float)
    frame["three"] = np.digitize(signal, [0.5, 1.5]).astype(float)
    frame["y"] = 3 * frame.a - frame.b / 4 + 2 * (frame.color == "blue") + noise
    return spark.createDataFrame(frame)


def pipelines() -> dict[str, list[Any]]:
    """One pipeline per final stage, covering every supported stage between them."""
    from pyspark.ml.classification import (
        DecisionTreeClassifier,
        GBTClassifier,
        LogisticRegression,
        RandomForestClassifier,
    )
    from pyspark.ml.clustering import KMeans
    from pyspark.ml.feature import (
        Imputer,
        MinMaxScaler,
        OneHotEncoder,
        StandardScaler,
        StringIndexer,
        VectorAssembler,
    )
    from pyspark.ml.regression import (
        DecisionTreeRegressor,
        GBTRegressor,
        LinearRegression,
        RandomForestRegressor,
    )

    def indexed() -> list[Any]:
        return [
            StringIndexer(inputCol="color", outputCol="ci", handleInvalid="keep"),
            VectorAssembler(inputCols=["a", "b", "ci"], outputCol="features"),
        ]

    return {
        "binary_lr": [
            StringIndexer(inputCol="color", outputCol="ci", handleInvalid="keep"),
            OneHotEncoder(inputCols=["ci"], outputCols=["co"], handleInvalid="keep"),
            VectorAssembler(inputCols=["a", "b"], outputCol="numbers"),
            StandardScaler(inputCol="numbers", outputCol="scaled", withMean=True),
            VectorAssembler(inputCols=["scaled", "co"], outputCol="features"),
            LogisticRegression(labelCol="binary"),
        ],
        "multinomial_lr": [
            Imputer(inputCols=["a", "b"], outputCols=["ai", "bi"]),
            VectorAssembler(inputCols=["ai", "bi"], outputCol="numbers"),
            MinMaxScaler(inputCol="numbers", outputCol="features"),
            LogisticRegression(labelCol="three", family="multinomial"),
        ],
        "gbt_classifier": [*indexed(), GBTClassifier(labelCol="binary", maxIter=5, seed=1)],
        "forest_classifier": [
            *indexed(),
            RandomForestClassifier(labelCol="three", numTrees=5, seed=1),
        ],
        "tree_classifier": [*indexed(), DecisionTreeClassifier(labelCol="three", maxDepth=4)],
        "linear_regression": [  # a constant column: Spark scales it to 0, then mid-range
            StringIndexer(inputCol="color", outputCol="ci", handleInvalid="keep"),
            VectorAssembler(inputCols=["a", "b", "ci", "k"], outputCol="numbers"),
            StandardScaler(inputCol="numbers", outputCol="standard", withMean=True),
            MinMaxScaler(inputCol="standard", outputCol="features", min=-1.0, max=3.0),
            LinearRegression(labelCol="y"),
        ],
        "tree_regressor": [*indexed(), DecisionTreeRegressor(labelCol="y", maxDepth=4)],
        "forest_regressor": [*indexed(), RandomForestRegressor(labelCol="y", numTrees=5, seed=1)],
        "gbt_regressor": [*indexed(), GBTRegressor(labelCol="y", maxIter=5, seed=1)],
        "kmeans": [
            VectorAssembler(inputCols=["a", "b"], outputCol="features"),
            KMeans(k=3, seed=1),
        ],
    }


def new_rows() -> pd.DataFrame:
    """Rows to insert: ordinary ones, an unseen category, a NULL category, a NULL number."""
    frame = rows(ORDINARY, 3)
    odd = pd.DataFrame(
        {
            "a": [0.3, 0.3, np.nan],
            "b": [4.0, 4.0, 4.0],
            "color": ["purple", None, "red"],
            "k": [1.0, 1.0, 1.0],
        }
    )
    return pd.concat([frame, odd], ignore_index=True)


def spark_rows(estimator: Any, frame: pd.DataFrame) -> list[tuple[Any, ...] | None]:
    """Spark's own prediction per row: (label, probabilities...) or (value,); ``None`` where
    Spark refuses the row. The rows without a NULL number in one transform (the pipelines
    keep unseen and NULL categories), each row with one alone."""

    def predicted(part: pd.DataFrame) -> list[tuple[Any, ...]]:
        out = estimator._transform(part)
        labels = out.iloc[:, 0].tolist()
        if estimator.kind is ModelKind.REGRESSION:
            return [(float(v),) for v in labels]
        if estimator.kind is ModelKind.CLUSTERING:
            return [(str(int(v)),) for v in labels]
        return [
            (str(int(v)), *p.toArray().tolist())
            for v, p in zip(labels, out.iloc[:, 1], strict=True)
        ]

    numbers = [c for c in frame.columns if c != "color"]
    whole = frame[numbers].notna().all(axis=1).to_numpy()
    found: list[tuple[Any, ...] | None] = [None] * len(frame)
    for i, row in zip(np.flatnonzero(whole), predicted(frame[whole]), strict=True):
        found[i] = row
    for i in np.flatnonzero(~whole):
        with contextlib.suppress(ValueError):  # Spark refuses the row: None
            (found[i],) = predicted(frame.iloc[i : i + 1])
    return found


@dataclass(frozen=True)
class Fitted:
    """A fitted pipeline saved with ``mlflow.spark``, Spark's own predictions and the
    predictions of its ONNX conversion."""

    path: Path
    columns: list[str]  # the columns it reads
    expected: list[Expected]  # Spark's predictions on ``new_rows()[columns]``
    converted: list[Expected]  # the ONNX model's on the same rows
    outputs: list[str]  # the prediction columns to compare


def onnx_rows(estimator: Any, frame: pd.DataFrame) -> list[Expected]:
    """The pipeline converted to ONNX as the build converts it, run by onnxruntime on the
    rows fed as the scoring runtime feeds them (a NULL number NaN, a NULL text "")."""
    import onnxruntime

    from shared.scoring.spark_model import onnx_attempts

    inputs = tuple(
        Column(c, SqlType.TEXT if c == "color" else SqlType.DOUBLE) for c in frame.columns
    )
    ((_, attempt),) = list(onnx_attempts(estimator, inputs))
    session = onnxruntime.InferenceSession(
        attempt().SerializeToString(), providers=["CPUExecutionProvider"]
    )
    feeds = {
        c: np.array([["" if v is None else v] for v in frame[c]], dtype=object)
        if c == "color"
        else frame[c].to_numpy(np.float32).reshape(-1, 1)
        for c in frame.columns
    }
    outputs = session.run(None, feeds)
    if estimator.kind is ModelKind.REGRESSION:
        return [(float(v),) for v in outputs[0].reshape(-1)]
    if estimator.kind is ModelKind.CLUSTERING:
        return [(str(int(v)),) for v in outputs[0].reshape(-1)]
    return [(str(int(v)), *p) for v, p in zip(outputs[0], outputs[1].tolist(), strict=True)]


@pytest.fixture(scope="module")
def fitted(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Fitted]]:
    """Every pipeline, fitted, saved and converted once for the module."""
    from pyspark.ml import Pipeline

    from shared.scoring.spark_model import SparkEstimator, spark_session

    spark = spark_session()
    data = training(spark)
    sample = rows(50, 4)
    found = {}
    for name, stages in pipelines().items():
        model = Pipeline(stages=stages).fit(data)
        estimator = SparkEstimator((spark, model))
        columns = estimator.input_names
        path = tmp_path_factory.mktemp("spark") / name
        mlflow.spark.save_model(
            model,
            str(path),
            signature=infer_signature(sample[columns]),
            input_example=sample[columns],
            pip_requirements=[],
        )
        frame = new_rows()[columns]
        expected = spark_rows(estimator, frame)
        width = len(next(e for e in expected if e is not None))
        outputs = ["prediction", *(f"C{i}" for i in range(width - 1))]
        found[name] = Fitted(path, columns, expected, onnx_rows(estimator, frame), outputs)
    yield found
    spark_session().stop()


@pytest.mark.parametrize("name", PIPELINES)
def test_every_pipelines_onnx_model_gives_sparks_own_predictions(
    name: str, fitted: dict[str, Fitted]
) -> None:
    """Ordinary rows, an unseen and a NULL category, a NULL number (where Spark scores it)."""
    model = fitted[name]
    assert_predictions(model.converted, model.expected, TOLERANCE)
    # Spark refuses only the NULL number (VectorAssembler); every other row is compared.
    assert sum(e is not None for e in model.expected) >= ORDINARY + 2


@pytest.fixture(scope="module")
def sqlite_server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[MLManagerProcess]:
    with running_server(request, tmp_path_factory, "sqlite", "kinds") as server:
        yield server


@pytest.fixture(scope="module")
def postgres_server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[MLManagerProcess]:
    with running_server(request, tmp_path_factory, "postgresql", "kinds") as server:
        yield server


def deployed_and_compared(
    server: MLManagerProcess, model: Fitted, table: str, **payload: Any
) -> None:
    frame = new_rows()[model.columns]
    values = [(i, *r) for i, r in enumerate(frame.astype(object).where(frame.notna(), None).values)]
    deploy_and_compare(
        server,
        logged_to(server, model.path),
        table,
        model.columns,
        values,
        model.expected,
        model.outputs,
        TOLERANCE,
        **payload,
    )


# Through the running server and worker (each deploy starts Spark in the worker: slow, so
# a few pipelines; the others' ONNX models are compared above, and the database runs the
# same ONNX model): categories and a forest, on SQLite; on PostgreSQL sync and async.
@pytest.mark.parametrize("name", ["binary_lr", "gbt_regressor"])
def test_a_pipeline_deployed_on_sqlite_gives_sparks_own_predictions(
    name: str, fitted: dict[str, Fitted], sqlite_server: MLManagerProcess
) -> None:
    deployed_and_compared(sqlite_server, fitted[name], name)


def test_a_pipeline_deployed_on_postgresql_gives_sparks_own_predictions(
    fitted: dict[str, Fitted], postgres_server: MLManagerProcess
) -> None:
    deployed_and_compared(postgres_server, fitted["forest_classifier"], "forest")


def test_async_mode_on_postgresql_scores_as_spark(
    fitted: dict[str, Fitted], postgres_server: MLManagerProcess
) -> None:
    deployed_and_compared(postgres_server, fitted["multinomial_lr"], "multinomial", mode="async")


def test_an_unsupported_stage_is_refused_by_name_before_the_table_exists(
    sqlite_server: MLManagerProcess, tmp_path: Path
) -> None:
    from pyspark.ml import Pipeline
    from pyspark.ml.classification import LogisticRegression
    from pyspark.ml.feature import Binarizer, VectorAssembler

    from shared.scoring.spark_model import spark_session

    spark = spark_session()
    model = Pipeline(
        stages=[
            Binarizer(inputCol="a", outputCol="positive"),
            VectorAssembler(inputCols=["positive", "b"], outputCol="features"),
            LogisticRegression(labelCol="binary"),
        ]
    ).fit(training(spark))
    sample = rows(20, 5)[["a", "b"]]
    mlflow.spark.save_model(
        model, str(tmp_path / "model"), signature=infer_signature(sample), input_example=sample
    )
    job = deploy(sqlite_server, logged_to(sqlite_server, tmp_path / "model"), "binarized")
    assert job["status"] == "FAILURE", job["log"]
    assert job["attempt"] == 1, job  # a payload a user must change: not retried
    assert "stage Binarizer" in job["error"] and "supported stages: VectorAssembler" in job["error"]
    tables = read_rows(sqlite_server.db_url, "SELECT name FROM sqlite_master WHERE type = 'table'")
    assert ("binarized",) not in tables


def test_a_conversion_that_disagrees_with_spark_is_refused_before_the_table_exists(
    fitted: dict[str, Fitted],
    sqlite_url: str,
    engine_for: EngineFor,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A faulty converter simulated in this process (GBT tree weights 1% off); the refusal
    comes before any database work."""
    from shared.scoring import spark_onnx

    weights = spark_onnx._tree_weights
    monkeypatch.setattr(
        spark_onnx, "_tree_weights", lambda op, n: [w * 1.01 for w in weights(op, n)]
    )
    engine = engine_for(sqlite_url)
    upgrade(engine)
    with logged_locally(fitted["gbt_regressor"].path, tmp_path) as uri:
        payload = {
            "model_uri": uri,
            "db_schema": "main",
            "db_table": "wrong",
            "create_model_table": True,
            "primary_key": {"id": "INTEGER"},
        }
        with pytest.raises(InvalidPayload, match="ONNX does not reproduce") as refused:
            run_job(engine, settings_for(sqlite_url, tmp_path), "DEPLOY_DATABASE", payload)
    print(refused.value.message)
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM deployments")).scalar_one() == 0
    tables = read_rows(sqlite_url, "SELECT name FROM sqlite_master WHERE type = 'table'")
    assert ("wrong",) not in tables


def test_a_worker_without_pyspark_fails_the_deploy_once_naming_the_extra(
    fitted: dict[str, Fitted], sqlite_url: str, engine_for: EngineFor, tmp_path: Path
) -> None:
    engine = engine_for(sqlite_url)
    upgrade(engine)
    job = deploy_without_extra("pyspark", fitted["kmeans"].path, sqlite_url, engine, tmp_path)
    assert (job.status, job.attempt) == ("FAILURE", 1), job
    assert job.error is not None and "pip install 'mlmanager[spark]'" in job.error


def test_mlmanager_serve_answers_sparks_own_labels(
    fitted: dict[str, Fitted], tmp_path: Path
) -> None:
    """The serving process (mlrunner on the ONNX model) of a pipeline with a category:
    ordinary rows, an unseen and a NULL category."""
    model = fitted["binary_lr"]
    frame = new_rows()[model.columns].head(ORDINARY + 2)
    with logged_locally(model.path, tmp_path) as uri:
        predictions = served_predictions(uri, frame, tmp_path)
    expected = model.expected[: ORDINARY + 2]
    assert [str(p) for p in predictions] == [e[0] for e in expected if e is not None]
