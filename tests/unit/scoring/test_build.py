"""Each model kind becomes a representation whose scores equal the model's own output."""

from __future__ import annotations

import io
import zipfile
from typing import Any

import lightgbm
import mlflow
import mlflow.pyfunc
import numpy as np
import pandas as pd
import pytest
import xgboost
from mlflow.pyfunc import PythonModel
from sklearn.cluster import KMeans
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import RandomForestRegressor
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from shared.errors import InvalidPayload
from shared.model_source import ModelSource
from shared.scoring import (
    Column,
    ModelKind,
    Representation,
    RepresentationFormat,
    SqlType,
    scorer_for,
)
from shared.scoring import build as build_module
from shared.scoring.onnx_convert import Conversion, convert
from tests.support.mlflow_store import MLFLOW_SQLITE_STORE_WARNING, LogModel, build_from_uri, frame

Row = tuple[Any, ...]
# MLflow saves scikit-learn models with skops, which loads tree structures only when trusted.
TRUSTED_TREES = ["sklearn.tree._tree.Tree"]

pytestmark = MLFLOW_SQLITE_STORE_WARNING


def columns_of(features: pd.DataFrame) -> dict[str, list[Any]]:
    return {name: features[name].tolist() for name in features.columns}


def classifier_rows(model: Any, features: pd.DataFrame) -> list[Row]:
    labels = model.predict(features)
    probabilities = model.predict_proba(features)
    return [(str(label), *map(float, p)) for label, p in zip(labels, probabilities, strict=True)]


def assert_same(actual: list[Row], expected: list[Row]) -> None:
    """Labels exactly equal, numbers within 1e-5 relative."""
    assert len(actual) == len(expected)
    for got, want in zip(actual, expected, strict=True):
        assert len(got) == len(want)
        for value, wanted in zip(got, want, strict=True):
            if isinstance(wanted, float):
                assert value == pytest.approx(wanted, rel=1e-5)
            else:
                assert value == wanted


def score(rep: Representation, features: pd.DataFrame) -> list[Row]:
    return scorer_for(rep).score(columns_of(features))


def test_multiclass_logistic_regression_scores_labels_and_probabilities(
    log_model: LogModel,
) -> None:
    train, new = frame(120, 0), frame(40, 1)
    target = np.select([train.score < -0.3, train.score < 0.3], ["cat", "dog"], "fish")
    model = LogisticRegression(max_iter=500).fit(train, target)
    uri = log_model(mlflow.sklearn, model, train)

    rep = build_from_uri(uri, train.head(20))

    assert rep.format is RepresentationFormat.ONNX
    assert rep.kind is ModelKind.CLASSIFICATION
    assert rep.classes == ("cat", "dog", "fish")
    assert [(c.name, c.sql_type) for c in rep.outputs] == [
        ("PREDICTION", SqlType.TEXT),
        ("cat", SqlType.DOUBLE),
        ("dog", SqlType.DOUBLE),
        ("fish", SqlType.DOUBLE),
    ]
    assert rep.inputs == tuple(Column(name, SqlType.DOUBLE) for name in train.columns)
    assert rep.run_id == mlflow.last_active_run().info.run_id  # type: ignore[union-attr]
    assert len(rep.checksum) == 64
    assert_same(score(rep, new), classifier_rows(model, new))


def test_random_forest_regressor_scores_values(log_model: LogModel) -> None:
    train, new = frame(200, 2), frame(50, 3)
    model = RandomForestRegressor(n_estimators=15, max_depth=6, random_state=0)
    model.fit(train, 100.0 + 0.5 * train.age + train.income * train.score)
    uri = log_model(mlflow.sklearn, model, train, skops_trusted_types=TRUSTED_TREES)

    rep = build_from_uri(uri, train.head(30))

    assert rep.format is RepresentationFormat.ONNX
    assert rep.kind is ModelKind.REGRESSION
    assert rep.outputs == (Column("PREDICTION", SqlType.DOUBLE),)
    assert_same(score(rep, new), [(float(v),) for v in model.predict(new)])


def test_kmeans_scores_cluster_numbers_and_distances_with_transform(log_model: LogModel) -> None:
    train, new = frame(150, 4), frame(40, 5)
    model = KMeans(n_clusters=3, n_init=3, random_state=0).fit(train)
    uri = log_model(mlflow.sklearn, model, train)

    clusters = build_from_uri(uri, train.head(20))
    distances = build_from_uri(uri, train.head(20), method="transform")

    assert clusters.kind is ModelKind.CLUSTERING
    assert clusters.outputs == (Column("PREDICTION", SqlType.INTEGER),)
    assert score(clusters, new) == [(int(v),) for v in model.predict(new)]
    assert distances.kind is ModelKind.MULTI_OUTPUT
    assert [c.name for c in distances.outputs] == ["C0", "C1", "C2"]
    assert_same(score(distances, new), [tuple(map(float, r)) for r in model.transform(new)])


def test_pipeline_with_one_hot_text_column_converts_and_scores(log_model: LogModel) -> None:
    train, new = frame(150, 6, text=True), frame(40, 7, text=True)
    target = (train.score + (train.color == "red")) > 0.4
    encode = ColumnTransformer(
        [
            ("num", StandardScaler(), ["age", "income", "score"]),
            ("cat", OneHotEncoder(handle_unknown="ignore"), ["color"]),
        ]
    )
    model = make_pipeline(encode, LogisticRegression()).fit(train, target)
    uri = log_model(mlflow.sklearn, model, train)

    rep = build_from_uri(uri, train.head(20))

    assert rep.format is RepresentationFormat.ONNX
    assert Column("color", SqlType.TEXT) in rep.inputs
    assert rep.classes == ("False", "True")
    assert [c.name for c in rep.outputs] == ["PREDICTION", "C0", "C1"]  # TRUE is SQL
    assert_same(score(rep, new), classifier_rows(model, new))


def test_xgboost_classifier_converts_and_scores(log_model: LogModel) -> None:
    train, new = frame(150, 8), frame(40, 9)
    target = np.digitize(train.score, [-0.3, 0.3])
    model = xgboost.XGBClassifier(n_estimators=10, max_depth=3, n_jobs=1).fit(train, target)
    uri = log_model(mlflow.xgboost, model, train)

    rep = build_from_uri(uri, train.head(20))

    assert rep.format is RepresentationFormat.ONNX
    assert rep.flavor == "xgboost"
    assert [c.name for c in rep.outputs] == ["PREDICTION", "C0", "C1", "C2"]
    assert_same(score(rep, new), classifier_rows(model, new))


def test_lightgbm_regressor_converts_and_scores(log_model: LogModel) -> None:
    train, new = frame(200, 10), frame(40, 11)
    model = lightgbm.LGBMRegressor(n_estimators=20, num_leaves=7, n_jobs=1, verbose=-1)
    model.fit(train, 10.0 + train.age * train.score)
    uri = log_model(mlflow.lightgbm, model, train)

    rep = build_from_uri(uri, train.head(20))

    assert rep.format is RepresentationFormat.ONNX
    assert rep.kind is ModelKind.REGRESSION
    assert_same(score(rep, new), [(float(v),) for v in model.predict(new)])


class Doubler(PythonModel):
    """A custom model no converter knows."""

    def predict(self, context: Any, model_input: pd.DataFrame, params: Any = None) -> Any:
        return model_input["income"] * 2.0 + model_input["score"]


# MLflow asks for an input example when a pyfunc model is logged, and saving
# one warns under pandas 3 (MLflow compares an index with a range).
@pytest.mark.filterwarnings("ignore:.*An input example was not provided:UserWarning")
def test_custom_pyfunc_falls_back_to_pyfunc_with_a_log_line(
    log_model: LogModel, log_lines: list[str]
) -> None:
    train, new = frame(30, 12), frame(10, 13)
    uri = log_model(mlflow.pyfunc, Doubler(), train)

    rep = build_from_uri(uri, train)

    assert rep.format is RepresentationFormat.PYFUNC
    with zipfile.ZipFile(io.BytesIO(rep.payload)) as archive:
        assert "MLmodel" in archive.namelist()
    assert build_from_uri(uri, train).checksum == rep.checksum
    assert rep.kind is ModelKind.REGRESSION
    assert any("falling back to MLflow pyfunc" in line and uri in line for line in log_lines)
    expected = [(float(v),) for v in new.income * 2.0 + new.score]
    assert_same(score(rep, new), expected)


def test_conversion_that_disagrees_with_the_model_is_refused_showing_rows(
    log_model: LogModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    train = frame(100, 14)
    model = LogisticRegression().fit(train, train.score > 0)
    wrong = LogisticRegression().fit(train, train.score < 0)
    uri = log_model(mlflow.sklearn, model, train)
    wrong_uri = log_model(mlflow.sklearn, wrong, train)

    def wrong_conversion(loaded: Any, info: Any, inputs: Any) -> Conversion:
        with ModelSource.open(wrong_uri) as source:
            return convert(build_module.load_model(str(source.path)), info, inputs)

    monkeypatch.setattr(build_module, "convert", wrong_conversion)
    with pytest.raises(InvalidPayload) as refused:
        build_from_uri(uri, train.head(10))

    message = refused.value.message
    assert f"ONNX does not reproduce {uri} on 30 values of the 10 rows (10 sample rows)" in message
    assert "row 0 PREDICTION: model " in message
    assert "and " in message and "more" in message


def test_float_precision_conversion_is_refused_at_zero_tolerance(log_model: LogModel) -> None:
    train = frame(200, 15)
    model = RandomForestRegressor(n_estimators=5, random_state=0)
    model.fit(train, train.income * train.score / 7.0)
    uri = log_model(mlflow.sklearn, model, train, skops_trusted_types=TRUSTED_TREES)

    build_from_uri(uri, train.head(20), tolerance=1e-4)
    with pytest.raises(InvalidPayload, match=r"tolerance 0;.*row \d+ PREDICTION: model "):
        build_from_uri(uri, train.head(20), tolerance=0.0)


def test_sample_without_a_model_input_is_refused(log_model: LogModel) -> None:
    train = frame(50, 16)
    model = LogisticRegression().fit(train, train.score > 0)
    uri = log_model(mlflow.sklearn, model, train)

    with pytest.raises(InvalidPayload, match="lack model inputs: income"):
        build_from_uri(uri, train.drop(columns="income"))


def test_null_features_are_missing_values_for_trees_and_unknown_text(log_model: LogModel) -> None:
    train = frame(200, 17, text=True)
    numeric = train.drop(columns="color")
    boosted = lightgbm.LGBMClassifier(n_estimators=10, num_leaves=5, n_jobs=1, verbose=-1)
    boosted.fit(numeric, (train.score > 0).astype(int))
    boosted_rep = build_from_uri(log_model(mlflow.lightgbm, boosted, numeric), numeric)
    encode = ColumnTransformer([("cat", OneHotEncoder(handle_unknown="ignore"), ["color"])])
    by_color = make_pipeline(encode, LogisticRegression()).fit(train, train.color == "red")
    text_rep = build_from_uri(log_model(mlflow.sklearn, by_color, train), train.head(20))

    holes = pd.DataFrame(
        {"age": [None, 40.0], "income": [55.0, None], "score": [0.5, None], "color": [None, "red"]}
    )
    with_nan = holes[numeric.columns].astype(np.float64)
    assert_same(
        scorer_for(boosted_rep).score(columns_of(holes)),
        classifier_rows(boosted, with_nan),
    )
    unknown = holes.assign(color=["purple", "red"])
    assert_same(score(text_rep, holes), classifier_rows(by_color, unknown))


def test_null_features_give_null_predictions_for_linear_models(log_model: LogModel) -> None:
    train = frame(80, 18)
    model = LogisticRegression().fit(train, train.score > 0)
    rep = build_from_uri(log_model(mlflow.sklearn, model, train), train.head(10))

    rows = scorer_for(rep).score([[None, 50.0, 0.1], [30.0, 50.0, 0.1]])

    assert rows[0] == (None, None, None)
    assert_same(
        rows[1:], classifier_rows(model, pd.DataFrame([[30.0, 50.0, 0.1]], columns=train.columns))
    )
