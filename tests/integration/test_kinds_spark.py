"""Spark ML PipelineModels deployed onto PostgreSQL and SQLite through ONNX (onnxmltools).

The pipelines are trained here on a local Spark session, on data made here, logged
with ``mlflow.spark``; their own predictions (``transform``) on the new rows are
taken before any deploy (the deploy stops the process's Spark session when it is
done, as the worker does). Each is deployed with the worker's DEPLOY_DATABASE
handler and every inserted row's prediction is compared with Spark's: labels and
clusters exactly, probabilities and values within 1e-4 (the ONNX model computes in
float32, Spark in double).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow.models import infer_signature
from sqlalchemy import Engine, text

from shared.errors import InvalidPayload
from shared.migrations import upgrade
from shared.scoring.kinds import ModelKind
from shared.settings import Settings
from tests.support.engines import EngineFor, settings_for
from tests.support.indb import insert_rows, read_rows, run_job, schema_for
from tests.support.mlflow_store import INPUT_EXAMPLE_WARNING, MLFLOW_SQLITE_STORE_WARNING

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
# Pipelines whose ONNX conversion reproduces Spark: deployed and compared row by row.
AGREEING = ["binary_lr", "tree_classifier", "gbt_over_numbers", "kmeans"]
# Pipelines onnxmltools 1.16 converts to a graph that disagrees with Spark (trees and
# ensembles reading a StringIndexer's index, which Spark splits as a categorical
# feature; multinomial LR after MinMaxScaler; StringIndexer's "keep" bucket for a NULL
# category): the check refuses them before the table exists.
DISAGREEING = [
    "multinomial_lr",
    "gbt_classifier",
    "forest_classifier",
    "linear_regression",
    "tree_regressor",
    "forest_regressor",
    "gbt_regressor",
]


def rows(count: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "a": rng.normal(0.0, 1.0, count),
            "b": rng.normal(5.0, 10.0, count),
            "color": rng.choice(["red", "green", "blue"], count).astype(object),
        }
    )


def training(spark: Any) -> Any:
    frame = rows(400, 1)
    noise = np.random.default_rng(2).normal(0.0, 0.7, len(frame))
    signal = frame.a + frame.b / 10 + (frame.color == "red") + noise
    frame["binary"] = (signal > 1.0).astype(float)
    frame["three"] = np.digitize(signal, [0.5, 1.5]).astype(float)
    frame["y"] = 3 * frame.a - frame.b / 4 + 2 * (frame.color == "blue") + noise
    return spark.createDataFrame(frame)


def pipelines() -> dict[str, list[Any]]:
    """Five pipelines covering every supported stage (trees and regressors share stages)."""
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
        "gbt_classifier": [*indexed(), GBTClassifier(labelCol="binary", maxIter=10, seed=1)],
        "gbt_over_numbers": [
            VectorAssembler(inputCols=["a", "b"], outputCol="features"),
            GBTClassifier(labelCol="binary", maxIter=10, seed=1),
        ],
        "forest_classifier": [
            *indexed(),
            RandomForestClassifier(labelCol="three", numTrees=10, seed=1),
        ],
        "tree_classifier": [*indexed(), DecisionTreeClassifier(labelCol="three", maxDepth=4)],
        "linear_regression": [*indexed(), LinearRegression(labelCol="y")],
        "tree_regressor": [*indexed(), DecisionTreeRegressor(labelCol="y", maxDepth=4)],
        "forest_regressor": [*indexed(), RandomForestRegressor(labelCol="y", numTrees=10, seed=1)],
        "gbt_regressor": [*indexed(), GBTRegressor(labelCol="y", maxIter=10, seed=1)],
        "kmeans": [
            VectorAssembler(inputCols=["a", "b"], outputCol="features"),
            KMeans(k=3, seed=1),
        ],
    }


def new_rows() -> pd.DataFrame:
    """Rows to insert: ordinary ones, an unseen category, a NULL category, a NULL number."""
    frame = rows(ORDINARY, 3)
    odd = pd.DataFrame(
        {"a": [0.3, 0.3, np.nan], "b": [4.0, 4.0, 4.0], "color": ["purple", None, "red"]}
    )
    return pd.concat([frame, odd], ignore_index=True)


def spark_rows(estimator: Any, frame: pd.DataFrame) -> list[tuple[Any, ...] | None]:
    """Spark's own prediction per row: (label, probabilities...) or (value,); ``None`` where
    Spark refuses the row. The ordinary rows in one transform, the odd ones one by one."""

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

    found: list[tuple[Any, ...] | None] = list(predicted(frame.head(ORDINARY)))
    for i in range(ORDINARY, len(frame)):
        try:
            found.extend(predicted(frame.iloc[i : i + 1]))
        except ValueError:
            found.append(None)
    return found


@pytest.fixture(scope="module")
def trained(tracking: None) -> dict[str, tuple[str, list[tuple[Any, ...] | None], Any]]:
    """name -> (model URI, Spark's predictions on ``new_rows()``, the columns it reads)."""
    from pyspark.ml import Pipeline

    from shared.scoring.spark_model import SparkEstimator, spark_session

    spark = spark_session()
    data = training(spark)
    found = {}
    sample = rows(50, 4)
    for name, stages in pipelines().items():
        model = Pipeline(stages=stages).fit(data)
        estimator = SparkEstimator((spark, model))
        columns = estimator.input_names  # the columns the pipeline reads
        with mlflow.start_run():
            info = mlflow.spark.log_model(
                model,
                "model",
                signature=infer_signature(sample[columns]),
                input_example=sample[columns],
                pip_requirements=[],
            )
        expected = spark_rows(estimator, new_rows()[columns])
        found[name] = (str(info.model_uri), expected, columns)
    return found


def table_of(url: str, table: str) -> str:
    return table if url.startswith("sqlite") else f"{schema_for(url)}.{table}"


def deploy(url: str, engine: Engine, settings: Settings, uri: str, table: str) -> list[str]:
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
            "reference_table": None,
        },
    )


@pytest.mark.parametrize("name", AGREEING)
def test_a_pipeline_gives_sparks_own_predictions_in_the_database(
    name: str, trained: dict[str, Any], deployed_db: tuple[str, Engine, Settings]
) -> None:
    url, engine, settings = deployed_db
    uri, expected, columns = trained[name]
    deploy(url, engine, settings, uri, name)
    frame = new_rows()[columns]
    values = [(i, *r) for i, r in enumerate(frame.astype(object).where(frame.notna(), None).values)]
    insert_rows(url, name, ["id", *columns], values[:1], schema_for(url))
    insert_rows(url, name, ["id", *columns], values[1:], schema_for(url))
    width = len(next(e for e in expected if e is not None))
    names = ", ".join(["prediction", *(f"C{i}" for i in range(width - 1))])
    got = read_rows(url, f"SELECT {names} FROM {table_of(url, name)} ORDER BY id")
    compared = 0
    for row, want in zip(got, expected, strict=True):
        if want is None:  # Spark refuses the row (a NULL number into VectorAssembler)
            continue
        predicted = row
        if isinstance(want[0], str):  # a label or a cluster
            assert str(predicted[0]) == want[0], (row, want)
            np.testing.assert_allclose(predicted[1:], want[1:], atol=TOLERANCE)
        else:
            np.testing.assert_allclose(predicted, want, atol=TOLERANCE, rtol=TOLERANCE)
        compared += 1
    assert compared >= ORDINARY + 1  # the ordinary rows and the unseen category at least


@pytest.mark.parametrize("name", DISAGREEING)
def test_a_conversion_that_disagrees_with_spark_is_refused_before_the_table_exists(
    name: str, trained: dict[str, Any], sqlite_url: str, engine_for: EngineFor, tmp_path: Path
) -> None:
    """The refusal comes before any database work: checked on SQLite only."""
    engine = engine_for(sqlite_url)
    upgrade(engine)
    uri, _, _ = trained[name]
    with pytest.raises(InvalidPayload, match="ONNX does not reproduce") as refused:
        deploy(sqlite_url, engine, settings_for(sqlite_url, tmp_path), uri, name)
    print(refused.value.message)
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM deployments")).scalar_one() == 0
    tables = read_rows(sqlite_url, "SELECT name FROM sqlite_master WHERE type = 'table'")
    assert (name,) not in tables


def test_an_unsupported_stage_is_refused_by_name_before_the_table_exists(
    tracking: None, sqlite_url: str, engine_for: EngineFor, tmp_path: Path
) -> None:
    """The refusal comes before any database work: checked on SQLite only."""
    from pyspark.ml import Pipeline
    from pyspark.ml.classification import LogisticRegression
    from pyspark.ml.feature import Binarizer, VectorAssembler

    from shared.scoring.spark_model import spark_session

    url = sqlite_url
    engine = engine_for(url)
    upgrade(engine)
    settings = settings_for(url, tmp_path)
    spark = spark_session()
    model = Pipeline(
        stages=[
            Binarizer(inputCol="a", outputCol="positive"),
            VectorAssembler(inputCols=["positive", "b"], outputCol="features"),
            LogisticRegression(labelCol="binary"),
        ]
    ).fit(training(spark))
    sample = rows(20, 5)[["a", "b"]]
    with mlflow.start_run():
        info = mlflow.spark.log_model(
            model, "model", signature=infer_signature(sample), input_example=sample
        )
    with pytest.raises(InvalidPayload, match=r"stage Binarizer.*supported stages: VectorAssembler"):
        deploy(url, engine, settings, str(info.model_uri), "binarized")
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM deployments")).scalar_one() == 0
    tables = read_rows(url, "SELECT name FROM sqlite_master WHERE type = 'table'")
    assert ("binarized",) not in tables
