"""A converted model gives the model's own predictions on whole datasets, checked on few rows.

Each model is built from five sample rows (what a deploy has when only the
input example exists) and then scores a whole scikit-learn dataset: every
label must equal the model's and every number must be within 1e-6 of it
(relative to the value for regressions), NULL features included.
"""

from __future__ import annotations

from typing import Any

import lightgbm
import mlflow
import numpy as np
import pandas as pd
import pytest
import xgboost
from sklearn.compose import ColumnTransformer
from sklearn.datasets import load_breast_cancer, load_diabetes, load_iris, load_wine
from sklearn.ensemble import (
    GradientBoostingClassifier,
    GradientBoostingRegressor,
    RandomForestClassifier,
    RandomForestRegressor,
)
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from shared.errors import InvalidPayload
from shared.scoring import RepresentationFormat, scorer_for
from shared.scoring.kinds import ModelKind
from tests.support.datasets import churn_with_nulls
from tests.support.mlflow_store import MLFLOW_SQLITE_STORE_WARNING, LogModel, build_from_uri

pytestmark = MLFLOW_SQLITE_STORE_WARNING
# MLflow saves scikit-learn models with skops, which loads tree structures only when trusted.
TRUSTED = [
    "sklearn.tree._tree.Tree",
    "sklearn._loss.link.LogitLink",
    "sklearn._loss.link.IdentityLink",
    "sklearn._loss.link.MultinomialLogit",
    "sklearn._loss.loss.HalfBinomialLoss",
    "sklearn._loss.loss.HalfMultinomialLoss",
    "sklearn._loss.loss.HalfSquaredError",
    "sklearn.ensemble._gb.GradientBoostingClassifier",
    "sklearn.ensemble._gb.GradientBoostingRegressor",
    "sklearn.dummy.DummyClassifier",
    "sklearn.dummy.DummyRegressor",
]
DATASETS = {"breast_cancer": load_breast_cancer, "iris": load_iris, "wine": load_wine}


def dataset(name: str) -> tuple[pd.DataFrame, Any]:
    """A bundled dataset with scikit-learn's own column names made plain (``mean_radius``)."""
    loader = load_diabetes if name == "diabetes" else DATASETS[name]
    bunch = loader(as_frame=True)
    features = bunch.data.rename(columns=lambda c: "".join(x if x.isalnum() else "_" for x in c))
    return features, bunch.target


def assert_reproduces(model: Any, rep: Any, features: pd.DataFrame) -> None:
    """Every label equal and every number within 1e-6 (relative for large values)."""
    got = scorer_for(rep).score_columns(
        {name: features[name].tolist() for name in features.columns}
    )
    if rep.kind is ModelKind.CLASSIFICATION:
        labels = [str(v) for v in model.predict(features)]
        # The differing rows only: pytest's diff of two long lists takes minutes.
        assert len(got[0]) == len(labels)
        pairs = enumerate(zip(got[0], labels, strict=True))
        differing = [(i, g, w) for i, (g, w) in pairs if g != w]
        assert not differing, differing[:5]
        np.testing.assert_allclose(
            np.array(got[1:], dtype=np.float64).T, model.predict_proba(features), rtol=0, atol=1e-6
        )
    else:
        np.testing.assert_allclose(
            np.array(got[0], dtype=np.float64), model.predict(features), rtol=1e-6, atol=1e-6
        )


def test_breast_cancer_forest_gives_scikit_learns_probabilities_and_labels(
    log_model: LogModel, log_lines: list[str]
) -> None:
    """The case of issue 21: double inputs against float32 thresholds gave 0.6333 for 0.6667."""
    features, target = dataset("breast_cancer")
    # Trained on every other row (with this seed the old conversion gave 0.6333 for
    # scikit-learn's 0.6667 on one of the others, and flipped three 0.5/0.5 ties).
    model = RandomForestClassifier(n_estimators=30, random_state=1)
    model.fit(features.iloc[::2], target.iloc[::2])
    uri = log_model(mlflow.sklearn, model, features, skops_trusted_types=TRUSTED)

    rep = build_from_uri(uri, features.head(5))

    assert rep.format is RepresentationFormat.ONNX
    assert_reproduces(model, rep, features)
    checked = next(line for line in log_lines if "reproduces the model on" in line)
    assert "rows near split thresholds" in checked and "worst difference per column" in checked


@pytest.mark.parametrize("name", ["breast_cancer", "iris", "wine"])
@pytest.mark.parametrize(
    "make",
    [
        lambda: RandomForestClassifier(n_estimators=25, random_state=1),
        lambda: GradientBoostingClassifier(n_estimators=20, random_state=1),
        lambda: xgboost.XGBClassifier(n_estimators=20, max_depth=4),
        lambda: lightgbm.LGBMClassifier(n_estimators=20, num_leaves=8, verbose=-1, n_jobs=1),
    ],
    ids=["random_forest", "gradient_boosting", "xgboost", "lightgbm"],
)
def test_classifiers_reproduce_every_row_of_a_dataset(
    log_model: LogModel, name: str, make: Any
) -> None:
    features, target = dataset(name)
    model = make().fit(features, target)
    flavor = {
        xgboost.XGBClassifier: mlflow.xgboost,
        lightgbm.LGBMClassifier: mlflow.lightgbm,
    }.get(type(model), mlflow.sklearn)
    extra = {"skops_trusted_types": TRUSTED} if flavor is mlflow.sklearn else {}
    uri = log_model(flavor, model, features, **extra)

    rep = build_from_uri(uri, features.head(5))

    assert rep.format is RepresentationFormat.ONNX
    assert_reproduces(model, rep, features)
    with_nulls = features.mask(np.random.default_rng(3).random(features.shape) < 0.1)
    if isinstance(model, GradientBoostingClassifier):  # it has no answer for a NULL
        with pytest.raises(ValueError, match="Input X contains NaN"):
            model.predict(with_nulls)
    else:
        assert_reproduces(model, rep, with_nulls)


@pytest.mark.parametrize(
    "make",
    [
        lambda: RandomForestRegressor(n_estimators=25, random_state=2),
        lambda: GradientBoostingRegressor(n_estimators=30, random_state=2),
        lambda: xgboost.XGBRegressor(n_estimators=20, max_depth=4),
        lambda: lightgbm.LGBMRegressor(n_estimators=20, num_leaves=8, verbose=-1, n_jobs=1),
    ],
    ids=["random_forest", "gradient_boosting", "xgboost", "lightgbm"],
)
def test_regressors_reproduce_every_row_of_diabetes(log_model: LogModel, make: Any) -> None:
    features, target = dataset("diabetes")
    model = make().fit(features, target)
    flavor = {
        xgboost.XGBRegressor: mlflow.xgboost,
        lightgbm.LGBMRegressor: mlflow.lightgbm,
    }.get(type(model), mlflow.sklearn)
    extra = {"skops_trusted_types": TRUSTED} if flavor is mlflow.sklearn else {}
    uri = log_model(flavor, model, features, **extra)

    rep = build_from_uri(uri, features.head(5))

    assert_reproduces(model, rep, features)


def test_pipeline_with_null_features_scores_as_the_model_does(log_model: LogModel) -> None:
    """The case of issue 21: NULL numbers went right at every split where scikit-learn
    sends a missing value down the child with more samples."""
    _, features, target = churn_with_nulls()
    encode = ColumnTransformer(
        [
            ("plan", OneHotEncoder(handle_unknown="ignore"), ["plan"]),
            ("numbers", StandardScaler(), ["usage", "tenure"]),
        ]
    )
    model = make_pipeline(encode, RandomForestClassifier(n_estimators=40, random_state=0))
    complete = features.notna().all(axis=1).to_numpy()
    model.fit(features[complete], target[complete])
    uri = log_model(
        mlflow.sklearn,
        model,
        features.dropna(),
        skops_trusted_types=[*TRUSTED, "sklearn.compose._column_transformer._RemainderColsList"],
    )

    rep = build_from_uri(uri, features.dropna().head(5))

    assert_reproduces(model, rep, features)


def test_a_null_mismatch_refuses_the_deploy_naming_the_null_rows(
    log_model: LogModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Where no conversion handles a NULL as the model does, the deploy is refused."""
    from shared.scoring import onnx_convert

    features, target = dataset("wine")
    model = RandomForestClassifier(n_estimators=10, random_state=0).fit(features, target)
    uri = log_model(mlflow.sklearn, model, features, skops_trusted_types=TRUSTED)
    # Without scikit-learn's missing-value branches, NaN goes right at every split.
    monkeypatch.setattr(onnx_convert, "_missing_goes_as_sklearn", lambda model, nodes: None)

    with pytest.raises(InvalidPayload, match=r"\(\w+ NULL\) \w+: model "):
        build_from_uri(uri, features.head(5))
