"""The scoring runtime: batch shapes, bad batches, and a PL/Python-like import."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from skl2onnx import to_onnx
from sklearn.linear_model import LinearRegression

from shared.errors import InvalidPayload
from shared.scoring import (
    Column,
    ModelKind,
    Representation,
    RepresentationFormat,
    SqlType,
    method_from,
    scorer_for,
)
from shared.scoring.kinds import output_column_names, output_columns

INPUTS = (Column("x", SqlType.DOUBLE), Column("y", SqlType.BIGINT))


@pytest.fixture(scope="module")
def regression() -> tuple[LinearRegression, Representation]:
    rng = np.random.default_rng(0)
    features = rng.normal(size=(50, 2))
    model = LinearRegression().fit(features, features @ [2.0, -3.0] + 1.0)
    payload = to_onnx(model, features[:1]).SerializeToString()
    rep = Representation(
        format=RepresentationFormat.ONNX,
        payload=payload,
        inputs=INPUTS,
        outputs=output_columns(ModelKind.REGRESSION, (), ()),
        kind=ModelKind.REGRESSION,
        classes=(),
        method="predict",
        flavor="sklearn",
        model_uri="runs:/abc/model",
    )
    return model, rep


def test_rows_and_columns_give_the_same_scores_for_any_batch_size(
    regression: tuple[LinearRegression, Representation],
) -> None:
    model, rep = regression
    scorer = scorer_for(rep)
    rows = np.random.default_rng(1).normal(size=(10_000, 2))

    by_rows = scorer.score(rows)
    by_columns = scorer.score(
        {"x": rows[:, 0].tolist(), "y": rows[:, 1].tolist(), "id": [0] * 10_000}
    )

    assert by_rows == by_columns
    assert [v for (v,) in by_rows] == pytest.approx(model.predict(rows).tolist(), rel=1e-9)
    assert scorer.score([[1.0, 2]]) == [pytest.approx((model.predict([[1.0, 2.0]])[0],))]
    assert scorer.score([]) == []
    assert scorer.score({"x": [], "y": []}) == []


def test_null_numeric_feature_gives_null_regression_prediction(
    regression: tuple[LinearRegression, Representation],
) -> None:
    _, rep = regression

    assert scorer_for(rep).score({"x": [None], "y": [1]}) == [(None,)]


@pytest.mark.parametrize(
    ("batch", "error"),
    [
        ({"x": [1.0]}, "batch lacks model inputs: y"),
        ([[1.0, 2.0, 3.0]], "must hold the 2 model inputs in order"),
        ({"x": [1.0, 2.0], "y": [1.0]}, "differ in length"),
        ({"x": ["one"], "y": [1.0]}, "input x is not numeric"),
    ],
)
def test_malformed_batches_are_refused(
    regression: tuple[LinearRegression, Representation], batch: object, error: str
) -> None:
    _, rep = regression

    with pytest.raises(InvalidPayload, match=error):
        scorer_for(rep).score(batch)  # type: ignore[arg-type]


def test_checksum_is_the_sha256_of_the_payload(
    regression: tuple[LinearRegression, Representation],
) -> None:
    _, rep = regression

    assert rep.checksum == hashlib.sha256(rep.payload).hexdigest()


def test_runtime_scores_with_only_numpy_and_onnxruntime(
    regression: tuple[LinearRegression, Representation], tmp_path: Path
) -> None:
    _, rep = regression
    (tmp_path / "model.onnx").write_bytes(rep.payload)
    script = f"""
import sys
for blocked in ("mlflow", "sklearn", "pandas", "skl2onnx", "onnxmltools", "loguru"):
    sys.modules[blocked] = None
from shared.scoring import Column, Representation, scorer_for
# Plain strings, as read back from the database.
rep = Representation(
    format="onnx", payload=open({str(tmp_path / "model.onnx")!r}, "rb").read(),
    inputs=(Column("x", "DOUBLE"), Column("y", "BIGINT")),
    outputs=(Column("PREDICTION", "DOUBLE"),), kind="regression",
    classes=(), method="predict", flavor="sklearn", model_uri="runs:/abc/model",
)
print(scorer_for(rep).score([[1.0, 2]]))
"""
    done = subprocess.run(
        [sys.executable, "-c", script],
        cwd=Path(__file__).parents[3],
        capture_output=True,
        text=True,
        check=False,
    )

    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("[(")


def test_class_labels_name_columns_only_when_they_are_plain_distinct_identifiers() -> None:
    assert output_column_names(["cat", "dog"]) == ("cat", "dog")
    assert output_column_names([0, 1, 2]) == ("C0", "C1", "C2")
    assert output_column_names(["high risk", "low"]) == ("C0", "C1")
    assert output_column_names(["a", "A"]) == ("C0", "C1")
    assert output_column_names(["prediction", "other"]) == ("C0", "C1")


def test_library_specific_method_is_validated() -> None:
    assert method_from(None) is None
    assert method_from({"method": "transform"}) == "transform"
    with pytest.raises(InvalidPayload, match="must be one of predict, predict_proba, transform"):
        method_from({"method": "fit"})
