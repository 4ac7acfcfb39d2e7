"""Deployed tables hold the model's own predictions for every row of whole datasets.

The DEPLOY_DATABASE handler runs in this process against real PostgreSQL
(synchronous PL/Python scoring) and SQLite; the models are logged with five
example rows only, so the deploy checks its conversion on those and on the
NULL and split-threshold rows it makes from them. Then a whole scikit-learn
dataset is inserted with a plain client and every stored label and number is
compared with the model's own ``predict``/``predict_proba``.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import lightgbm
import mlflow
import mlflow.lightgbm
import mlflow.xgboost
import numpy as np
import pandas as pd
import pytest
import xgboost
from sklearn.compose import ColumnTransformer
from sklearn.datasets import load_breast_cancer, load_diabetes, load_iris, load_wine
from sklearn.ensemble import GradientBoostingClassifier, RandomForestClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler
from sqlalchemy import Engine, text

from shared.deployments import DeploymentStore
from shared.scoring.kinds import column_name
from shared.settings import Settings
from tests.support.datasets import churn_with_nulls
from tests.support.indb import features, insert_rows, read_rows, run_job, schema_for
from tests.support.mlflow_store import (
    INPUT_EXAMPLE_WARNING,
    MLFLOW_SQLITE_STORE_WARNING,
    log_model,
)

with warnings.catch_warnings():  # MLflow's own type hints, when pyfunc is first imported
    warnings.filterwarnings("ignore", message=".*Any type hint is inferred as AnyType")
    import mlflow.pyfunc

pytestmark = [pytest.mark.postgres, MLFLOW_SQLITE_STORE_WARNING, INPUT_EXAMPLE_WARNING]

# MLflow 3.17 saves scikit-learn models with skops, which loads these only when trusted.
TRUSTED = [
    "sklearn.tree._tree.Tree",
    "sklearn._loss.link.MultinomialLogit",
    "sklearn._loss.loss.HalfMultinomialLoss",
    "sklearn.dummy.DummyClassifier",
    "sklearn.compose._column_transformer._RemainderColsList",
]


def plain(frame: pd.DataFrame) -> pd.DataFrame:
    """Column names made plain for the boosting libraries (LightGBM refuses some characters)."""
    return frame.rename(columns=column_name)


def null_pipeline() -> tuple[Any, pd.DataFrame]:
    """The case of issue 21: OneHotEncoder + StandardScaler feeding a forest, NULLs at scoring."""
    features, with_nulls, target = churn_with_nulls()
    encode = ColumnTransformer(
        [
            ("plan", OneHotEncoder(handle_unknown="ignore"), ["plan"]),
            ("numbers", StandardScaler(), ["usage", "tenure"]),
        ]
    )
    model = make_pipeline(encode, RandomForestClassifier(n_estimators=40, random_state=0))
    model.fit(features, target)
    return model, with_nulls


def case(name: str) -> tuple[Any, Any, pd.DataFrame]:
    """(MLflow flavor, fitted model, the whole dataset to insert) for one test case."""
    if name == "breast_cancer_forest":  # scikit-learn's own names: "mean radius"...
        data = load_breast_cancer(as_frame=True)
        model = RandomForestClassifier(n_estimators=30, random_state=1)
        return mlflow.sklearn, model.fit(data.data.iloc[::2], data.target.iloc[::2]), data.data
    if name == "iris_gradient_boosting":  # "sepal length (cm)"...
        data = load_iris(as_frame=True)
        model = GradientBoostingClassifier(n_estimators=20, random_state=0)
        return mlflow.sklearn, model.fit(data.data, data.target), data.data
    if name == "wine_xgboost":
        data = load_wine(as_frame=True)
        features = plain(data.data)
        model = xgboost.XGBClassifier(n_estimators=20, max_depth=4)
        return mlflow.xgboost, model.fit(features, data.target), features
    if name == "diabetes_lightgbm":
        data = load_diabetes(as_frame=True)
        model = lightgbm.LGBMRegressor(n_estimators=30, num_leaves=8, verbose=-1, n_jobs=1)
        return mlflow.lightgbm, model.fit(data.data, data.target), data.data
    if name == "iris_pipeline_by_column_names":  # a ColumnTransformer picks "sepal length (cm)"
        data = load_iris(as_frame=True)
        features = data.data.assign(
            **{"kind of soil": np.random.default_rng(0).choice(["clay", "sand"], len(data.data))}
        ).astype({"kind of soil": object})
        encode = ColumnTransformer(
            [
                ("numbers", StandardScaler(), ["sepal length (cm)", "petal width (cm)"]),
                ("soil", OneHotEncoder(handle_unknown="ignore"), ["kind of soil"]),
            ]
        )
        model = make_pipeline(encode, RandomForestClassifier(n_estimators=20, random_state=0))
        return mlflow.sklearn, model.fit(features, data.target), features
    model, features = null_pipeline()
    return mlflow.sklearn, model, features


@pytest.mark.parametrize(
    "name",
    [
        "breast_cancer_forest",
        "iris_gradient_boosting",
        "wine_xgboost",
        "diabetes_lightgbm",
        "pipeline_with_nulls",
        "iris_pipeline_by_column_names",
    ],
)
def test_every_stored_prediction_is_the_models_own(
    tracking: None, deployed_db: tuple[str, Engine, Settings], name: str
) -> None:
    url, engine, settings = deployed_db
    flavor, model, features = case(name)
    extra = {"skops_trusted_types": TRUSTED} if flavor is mlflow.sklearn else {}
    example = features.dropna().head(5)
    uri = log_model(flavor, model, example, **extra)
    schema = schema_for(url)
    payload = {
        "model_uri": uri,
        "db_schema": schema,
        "db_table": "scored",
        "create_model_table": True,
        "primary_key": {"id": "BIGINT"},
    }

    lines = run_job(engine, settings, "DEPLOY_DATABASE", payload)
    columns = [column_name(c) for c in features.columns]
    rows = [
        (i, *(None if isinstance(v, float) and math.isnan(v) else v for v in row))
        for i, row in enumerate(features.astype(object).itertuples(index=False))
    ]
    insert_rows(url, "scored", ["id", *columns], rows, schema)

    table = "scored" if url.startswith("sqlite") else f"{schema}.scored"
    if hasattr(model, "predict_proba"):
        classes = [str(c) for c in model.classes_]
        outputs = classes if classes[0].isalpha() else [f"c{i}" for i in range(len(classes))]
        got = read_rows(url, f"SELECT prediction, {', '.join(outputs)} FROM {table} ORDER BY id")
        labels = [str(v) for v in model.predict(features)]
        differing = [(i, r[0], w) for i, (r, w) in enumerate(zip(got, labels, strict=True))]
        assert [d for d in differing if d[1] != d[2]] == []
        np.testing.assert_allclose(
            np.array([r[1:] for r in got], dtype=np.float64),
            model.predict_proba(features),
            rtol=0,
            atol=1e-6,
        )
    else:
        got = read_rows(url, f"SELECT prediction FROM {table} ORDER BY id")
        np.testing.assert_allclose(
            np.array([r[0] for r in got], dtype=np.float64),
            model.predict(features),
            rtol=1e-6,
        )
    checked = [line for line in lines if "reproduces the model on" in line]
    assert checked and "worst difference per column" in checked[0], lines


def test_scikit_learn_column_names_become_sql_names_in_the_plan_and_the_record(
    tracking: None, deployed_db: tuple[str, Engine, Settings]
) -> None:
    """``sepal length (cm)`` is fed by column ``sepal_length_cm``; the plan and record say so."""
    url, engine, settings = deployed_db
    data = load_iris(as_frame=True)
    model = RandomForestClassifier(n_estimators=10, random_state=0).fit(data.data, data.target)
    uri = log_model(mlflow.sklearn, model, data.data, skops_trusted_types=TRUSTED)
    schema = schema_for(url)
    payload = {
        "model_uri": uri,
        "db_schema": schema,
        "db_table": "flowers",
        "create_model_table": True,
        "primary_key": {"id": "BIGINT"},
    }

    dry = run_job(engine, settings, "DEPLOY_DATABASE", payload | {"dry_run": True})
    plan = next(line for line in dry if line.startswith("dry run"))
    assert "-- model input 'sepal length (cm)' is read from column sepal_length_cm" in plan
    assert '"sepal_length_cm" ' in plan
    run_job(engine, settings, "DEPLOY_DATABASE", payload)
    columns = ["sepal_length_cm", "sepal_width_cm", "petal_length_cm", "petal_width_cm"]
    rows = [(i, *map(float, r)) for i, r in enumerate(data.data.itertuples(index=False))]
    insert_rows(url, "flowers", ["id", *columns], rows, schema)

    table = "flowers" if url.startswith("sqlite") else f"{schema}.flowers"
    got = read_rows(url, f"SELECT prediction FROM {table} ORDER BY id")
    assert [r[0] for r in got] == [str(v) for v in model.predict(data.data)]
    (deployment,) = DeploymentStore(engine).list()
    assert deployment.spec is not None
    assert deployment.spec.input_columns["sepal length (cm)"] == "sepal_length_cm"


def test_the_tables_rows_and_the_input_example_are_all_checked(
    tracking: None, deployed_db: tuple[str, Engine, Settings]
) -> None:
    """Every available sample row (up to 5000) is checked, not the first source's 200."""
    url, engine, settings = deployed_db
    data = load_wine(as_frame=True)
    features = plain(data.data)
    model = RandomForestClassifier(n_estimators=10, random_state=0).fit(features, data.target)
    uri = log_model(mlflow.sklearn, model, features, skops_trusted_types=TRUSTED)
    schema = schema_for(url)
    with engine.begin() as conn:
        if not url.startswith("sqlite"):
            conn.execute(text(f"CREATE SCHEMA {schema}"))
        definitions = ", ".join(f"{c} DOUBLE PRECISION" for c in features.columns)
        table = "vintages" if url.startswith("sqlite") else f"{schema}.vintages"
        conn.execute(text(f"CREATE TABLE {table} (id BIGINT PRIMARY KEY, {definitions})"))
    rows = [(i, *map(float, r)) for i, r in enumerate(features.itertuples(index=False))]
    rows += [(i + 1000, *row[1:]) for i, row in enumerate(rows)]  # 356 rows in the table
    insert_rows(url, "vintages", ["id", *features.columns], rows, schema)
    payload = {"model_uri": uri, "db_schema": schema, "db_table": "vintages"}

    lines = run_job(engine, settings, "DEPLOY_DATABASE", payload)

    assert (
        f"361 sample rows to check the model's representation on (356 from {schema}.vintages, "
        "5 from the input example)"
    ) in lines
    checked = next(line for line in lines if "reproduces the model on" in line)
    assert "(361 sample rows, " in checked


def test_rows_of_a_table_whose_columns_model_cols_names_are_checked(
    tracking: None, deployed_db: tuple[str, Engine, Settings]
) -> None:
    """``model_cols`` names the table's column for each model input, in order."""
    url, engine, settings = deployed_db
    train = features(300, 21)
    model = RandomForestClassifier(n_estimators=10, random_state=0).fit(train, train.score > 0)
    uri = log_model(mlflow.sklearn, model, train, skops_trusted_types=TRUSTED)
    schema = schema_for(url)
    table = "renamed" if url.startswith("sqlite") else f"{schema}.renamed"
    with engine.begin() as conn:
        if not url.startswith("sqlite"):
            conn.execute(text(f"CREATE SCHEMA {schema}"))
        conn.execute(
            text(
                f"CREATE TABLE {table} (id BIGINT PRIMARY KEY, years DOUBLE PRECISION, "
                "pay DOUBLE PRECISION, points DOUBLE PRECISION)"
            )
        )
    rows = [(i, *map(float, r)) for i, r in enumerate(train.itertuples(index=False))]
    insert_rows(url, "renamed", ["id", "years", "pay", "points"], rows, schema)
    payload = {
        "model_uri": uri,
        "db_schema": schema,
        "db_table": "renamed",
        "model_cols": ["years", "pay", "points"],
        "score_existing": True,
    }

    lines = run_job(engine, settings, "DEPLOY_DATABASE", payload)

    assert (
        f"305 sample rows to check the model's representation on (300 from {schema}.renamed, "
        "5 from the input example)"
    ) in lines
    got = read_rows(url, f"SELECT prediction FROM {table} ORDER BY id")
    assert [r[0] for r in got] == [str(v) for v in model.predict(train)]
