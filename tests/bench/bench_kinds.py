"""Keras and Spark ML models scored in PostgreSQL (issue 20).

One PostgreSQL 15 server with PL/Python, one run, two models trained here on ten
numeric features: a Spark ML pipeline (VectorAssembler + a 100-tree
GBTClassifier) and a small Keras MLP (10-32-16-2, softmax), each deployed by the
real DEPLOY_DATABASE handler (ONNX, checked against the framework) onto a new table.

Measured, the median of 3 repetitions each:
- ``INSERT ... SELECT`` of ``ROWS`` rows from a source table into an identical
  table without a trigger (plain) and into the deployed table (statement trigger);
- the framework's own batch predict on the same rows: Spark ``transform`` on a
  local session (the rows already in a cached Spark DataFrame; the predictions
  collected), Keras ``model.predict`` (batch 1024) on a float32 array.
Ratios: scored / plain time, and the framework's rows/s over the database's scored rows/s.
A model whose deploy is refused (its ONNX conversion disagrees with the framework:
onnxmltools' GBT converter, see README "Model kinds") is reported as refused, with
the framework's own timing only.
"""

from __future__ import annotations

import os
import statistics
import time
import warnings
from typing import Any

import mlflow
import numpy as np
import pandas as pd

from shared.errors import InvalidPayload
from tests.bench.bench_indb import (
    bench_postgres,
    connect,
    create_plain_twin,
    emptied,
    timed,
    unscored,
)
from tests.support.indb import run_job
from tests.support.mlflow_store import temporary_tracking_store

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

ROWS = int(os.environ.get("BENCH_KINDS_ROWS", "100000"))
TRAIN_ROWS = 10000
REPETITIONS = 3
WARM_UP_ROWS = 1000
N_FEATURES = 10
FEATURES = [f"f{i}" for i in range(N_FEATURES)]
SCHEMA = "apps"
SOURCE = f"{SCHEMA}.kinds_source"
COLUMNS = ", ".join(["id", *FEATURES])
MODELS = ("spark_gbt", "keras_mlp")


def features(rows: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(rng.normal(size=(rows, N_FEATURES)), columns=FEATURES)


def labels(frame: pd.DataFrame) -> np.ndarray:
    signal = frame.f0 + 0.5 * frame.f1 * frame.f2 - frame.f3 + 0.3 * frame.f4**2
    return (signal > 0.3).to_numpy(np.float64)


def train_spark(train: pd.DataFrame) -> tuple[Any, str]:
    from mlflow.models import infer_signature
    from pyspark.ml import Pipeline
    from pyspark.ml.classification import GBTClassifier
    from pyspark.ml.feature import VectorAssembler

    from shared.scoring.spark_model import spark_session

    spark = spark_session()
    data = spark.createDataFrame(train.assign(label=labels(train)))
    model = Pipeline(
        stages=[
            VectorAssembler(inputCols=FEATURES, outputCol="features"),
            GBTClassifier(maxIter=100, maxDepth=3, seed=1),
        ]
    ).fit(data)
    sample = train.head(200)
    with mlflow.start_run():
        info = mlflow.spark.log_model(
            model,
            "model",
            signature=infer_signature(sample),
            input_example=sample,
            pip_requirements=[],
        )
    return model, str(info.model_uri)


def train_keras(train: pd.DataFrame) -> tuple[Any, str]:
    import keras

    keras.utils.set_random_seed(1)
    model = keras.Sequential(
        [
            keras.Input(shape=(N_FEATURES,)),
            keras.layers.Dense(32, activation="relu"),
            keras.layers.Dense(16, activation="relu"),
            keras.layers.Dense(2, activation="softmax"),
        ]
    )
    model.compile("adam", "sparse_categorical_crossentropy")
    model.fit(train.to_numpy(np.float32), labels(train), epochs=3, batch_size=256, verbose=0)
    with mlflow.start_run():
        info = mlflow.keras.log_model(model, name="model", pip_requirements=[])
    return model, str(info.model_uri)


def insert_select(table: str, limit: int | None = None) -> str:
    where = f" WHERE id <= {limit}" if limit is not None else ""
    return f"INSERT INTO {SCHEMA}.{table} ({COLUMNS}) SELECT {COLUMNS} FROM {SOURCE}{where}"


def create_source(conn: Any, frame: pd.DataFrame) -> None:
    columns = ", ".join(f"{f} double precision" for f in FEATURES)
    conn.execute(f"CREATE SCHEMA IF NOT EXISTS {SCHEMA}")
    conn.execute(f"CREATE TABLE {SOURCE} (id bigint PRIMARY KEY, {columns})")
    with conn.cursor().copy(f"COPY {SOURCE} ({COLUMNS}) FROM STDIN") as copy:
        for number, row in enumerate(frame.itertuples(index=False), 1):
            copy.write_row((number, *row))
    conn.execute(f"VACUUM ANALYZE {SOURCE}")


def deploy(engine: Any, settings: Any, uri: str, table: str) -> None:
    """DEPLOY_DATABASE onto a new table; the source table gives the Keras model its
    columns and sample rows (its MLflow model has no input example)."""
    payload = {
        "model_uri": uri,
        "db_schema": SCHEMA,
        "db_table": table,
        "create_model_table": True,
        "primary_key": {"id": "BIGINT"},
        "reference_schema": SCHEMA,
        "reference_table": "kinds_source",
    }
    run_job(engine, settings, "DEPLOY_DATABASE", payload)


def bulk(conn: Any, scored: str, plain: str) -> dict[str, Any]:
    emptied(conn, plain, scored)
    conn.execute(insert_select(plain, WARM_UP_ROWS))
    conn.execute(insert_select(scored, WARM_UP_ROWS))  # loads the model in this session
    plain_times, scored_times = [], []
    for _ in range(REPETITIONS):
        emptied(conn, plain, scored)
        plain_times.append(timed(conn, insert_select(plain)))
        conn.execute("CHECKPOINT")
        scored_times.append(timed(conn, insert_select(scored)))
        missing = unscored(conn, scored)
        assert missing == 0, f"{missing} rows of {scored} were not scored"
    plain_s = statistics.median(plain_times)
    scored_s = statistics.median(scored_times)
    return {
        "plain_s": round(plain_s, 4),
        "scored_s": round(scored_s, 4),
        "plain_rows_per_s": round(ROWS / plain_s),
        "scored_rows_per_s": round(ROWS / scored_s),
        "scored_runs_s": [round(t, 4) for t in scored_times],
    }


def spark_predict_s(model: Any, frame: pd.DataFrame) -> float:
    from shared.scoring.spark_model import spark_session

    spark = spark_session()
    try:
        spark.conf.set("spark.sql.execution.arrow.pyspark.enabled", "true")
        data = spark.createDataFrame(frame).cache()
        data.count()
        times = []
        for _ in range(REPETITIONS):
            started = time.perf_counter()
            model.transform(data).select("prediction", "probability").toPandas()
            times.append(time.perf_counter() - started)
        return statistics.median(times)
    finally:
        spark.stop()


def keras_predict_s(model: Any, frame: pd.DataFrame) -> float:
    values = frame.to_numpy(np.float32)
    model.predict(values[:WARM_UP_ROWS], batch_size=1024, verbose=0)
    times = []
    for _ in range(REPETITIONS):
        started = time.perf_counter()
        model.predict(values, batch_size=1024, verbose=0)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def run() -> dict[str, Any]:
    train = features(TRAIN_ROWS, 1)
    source = features(ROWS, 3)
    with bench_postgres("mlm-bench-kinds-") as bench, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        url, settings, engine = bench.url, bench.settings, bench.engine
        with connect(url) as conn:
            create_source(conn, source)
        with temporary_tracking_store(bench.workdir / "mlflow", "bench_kinds"):
            spark_model, spark_uri = train_spark(train)
            keras_model, keras_uri = train_keras(train)
            results: dict[str, Any] = {}
            for name, uri in (("spark_gbt", spark_uri), ("keras_mlp", keras_uri)):
                started = time.perf_counter()
                try:
                    deploy(engine, settings, uri, name)
                except InvalidPayload as exc:  # the conversion disagrees with the framework
                    results[name] = {"refused": exc.message[:500]}
                    continue
                results[name] = {"deploy_s": round(time.perf_counter() - started, 1)}
        with connect(url) as conn:
            for name in MODELS:
                if "refused" not in results[name]:
                    plain = create_plain_twin(conn, name)
                    results[name].update(bulk(conn, name, plain))
        engine.dispose()
    framework = {
        "spark_gbt": spark_predict_s(spark_model, source),
        "keras_mlp": keras_predict_s(keras_model, source),
    }
    ratios: dict[str, float] = {}
    for name in MODELS:
        results[name]["framework_s"] = round(framework[name], 4)
        results[name]["framework_rows_per_s"] = round(ROWS / framework[name])
        if "refused" in results[name]:
            continue
        ratios[f"scored_over_plain_{name}"] = round(
            results[name]["scored_s"] / results[name]["plain_s"], 2
        )
        ratios[f"framework_over_database_rows_per_s_{name}"] = round(
            results[name]["framework_rows_per_s"] / results[name]["scored_rows_per_s"], 2
        )
    return {
        "insert_select": results,
        "ratios": ratios,
        "settings": {"rows": ROWS, "repetitions": REPETITIONS, "features": N_FEATURES},
    }
