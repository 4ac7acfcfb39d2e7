"""Loading an MLflow model in its own flavor, telling its kind, and its own predictions.

Build-time code (and the pyfunc fallback at scoring time): imports MLflow and pandas.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any

import mlflow
import numpy as np
import pandas as pd
from mlflow.models import Model

from shared.errors import InvalidPayload
from shared.model_source import ESTIMATOR_FLAVORS, NATIVE_FLAVORS
from shared.scoring.columns import Row, columns_from
from shared.scoring.kinds import Column, ModelKind, SqlType, output_column_names

PYFUNC = "python_function"
_SIGNATURE_TYPES = {
    "double": SqlType.DOUBLE,
    "float": SqlType.DOUBLE,
    "long": SqlType.BIGINT,
    "integer": SqlType.INTEGER,
    "string": SqlType.TEXT,
    "boolean": SqlType.BOOLEAN,
}


@dataclass(frozen=True)
class LoadedModel:
    """An MLflow model loaded as an estimator (sklearn API) or as a pyfunc model."""

    uri: str
    flavor: str
    model: Any
    signature_inputs: tuple[Column, ...] | None
    run_id: str | None


@dataclass(frozen=True)
class KindInfo:
    kind: ModelKind
    method: str
    classes: tuple[str, ...]
    output_names: tuple[str, ...]


def load_model(path: str) -> LoadedModel:
    """Load the model in directory ``path`` in the first flavor we can convert, else as
    MLflow pyfunc (a ``ModelSource``'s files, or an unpacked pyfunc representation: no
    tracking server is asked)."""
    info = Model.load(path)
    native = next((f for f in NATIVE_FLAVORS if f in info.flavors), None)
    if native is not None:
        return LoadedModel(
            path, native, _native_model(native, path), signature_inputs(info.signature), info.run_id
        )
    model: Any = None
    flavor = next((f for f in ESTIMATOR_FLAVORS if f in info.flavors), PYFUNC)
    if flavor != PYFUNC:
        from sklearn.base import BaseEstimator

        # (scikit-learn is imported only when such a model is loaded, so the pyfunc
        # fallback also runs where only mlflow-skinny is installed, e.g. PL/Python.)
        model = importlib.import_module(f"mlflow.{flavor}").load_model(path)
        # A raw Booster (not the sklearn wrapper) has no predict_proba/classes_.
        if not isinstance(model, BaseEstimator):
            flavor = PYFUNC
    if flavor == PYFUNC:
        model = mlflow.pyfunc.load_model(path)
    return LoadedModel(path, flavor, model, signature_inputs(info.signature), info.run_id)


def _native_model(flavor: str, path: str) -> Any:
    """A Keras or Spark ML model wrapped in the scikit-learn API the build reads."""
    if flavor == "keras":
        from shared.scoring.keras_model import KerasEstimator, load_keras

        return KerasEstimator(load_keras(path))
    from shared.scoring.spark_model import SparkEstimator, load_spark

    return SparkEstimator(load_spark(path))


def signature_inputs(signature: Any) -> tuple[Column, ...] | None:
    """Typed input columns of a column-based signature; ``None`` for none or tensors."""
    if (
        signature is None
        or signature.inputs.is_tensor_spec()
        or not signature.inputs.has_input_names()
    ):
        return None
    columns = []
    for name, data_type in zip(
        signature.inputs.input_names(), signature.inputs.input_types(), strict=True
    ):
        sql_type = _SIGNATURE_TYPES.get(getattr(data_type, "name", ""))
        if sql_type is None:
            raise InvalidPayload(
                f"model input {name} has type {data_type}, which a table cannot feed"
            )
        columns.append(Column(str(name), sql_type))
    return tuple(columns)


def sample_inputs(sample: pd.DataFrame) -> tuple[Column, ...]:
    """Input columns typed from a sample frame's dtypes."""
    columns = []
    for name, dtype in sample.dtypes.items():
        if pd.api.types.is_bool_dtype(dtype):
            sql_type = SqlType.BOOLEAN
        elif pd.api.types.is_integer_dtype(dtype):
            sql_type = SqlType.BIGINT if np.dtype(dtype).itemsize > 4 else SqlType.INTEGER
        elif pd.api.types.is_float_dtype(dtype):
            sql_type = SqlType.DOUBLE
        elif pd.api.types.is_string_dtype(dtype) or pd.api.types.is_object_dtype(dtype):
            sql_type = SqlType.TEXT
        else:
            raise InvalidPayload(
                f"sample column {name} has type {dtype}, which a table cannot feed"
            )
        columns.append(Column(str(name), sql_type))
    return tuple(columns)


def detect_kind(loaded: LoadedModel, method: str | None, sample: pd.DataFrame) -> KindInfo:
    """Tell the model's kind, classes and output names; ``method`` as in ``library_specific``."""
    from sklearn.base import is_classifier, is_clusterer, is_regressor

    model = loaded.model
    if loaded.flavor in NATIVE_FLAVORS:
        if method not in (None, "predict"):
            raise InvalidPayload(
                f"a {loaded.flavor} model only has predict, not {method}", field="library_specific"
            )
        model.check_columns([str(c) for c in sample.columns])
        classes = tuple(str(c) for c in np.asarray(model.classes_).tolist())
        return KindInfo(model.kind, "predict", classes, model.output_names())
    if loaded.flavor == PYFUNC:
        if method not in (None, "predict"):
            raise InvalidPayload(
                f"a {PYFUNC} model only has predict, not {method}", field="library_specific"
            )
        return _pyfunc_kind(model.predict(sample))
    if method == "predict_proba":
        if not hasattr(model, "predict_proba"):
            raise InvalidPayload("the model has no predict_proba", field="library_specific")
        return KindInfo(ModelKind.MULTI_OUTPUT, method, (), output_column_names(_classes(model)))
    if method == "transform":
        if not hasattr(model, "transform"):
            raise InvalidPayload("the model has no transform", field="library_specific")
        width = np.asarray(model.transform(sample.head(1))).shape[-1]
        return KindInfo(ModelKind.MULTI_OUTPUT, method, (), tuple(f"C{i}" for i in range(width)))
    if is_classifier(model):
        classes = _classes(model)
        names = output_column_names(classes) if hasattr(model, "predict_proba") else ()
        return KindInfo(ModelKind.CLASSIFICATION, "predict", classes, names)
    if is_clusterer(model):
        return KindInfo(ModelKind.CLUSTERING, "predict", (), ())
    if is_regressor(model):
        return KindInfo(ModelKind.REGRESSION, "predict", (), ())
    return _pyfunc_kind(model.predict(sample))


def _classes(model: Any) -> tuple[str, ...]:
    return tuple(str(label) for label in np.asarray(model.classes_).tolist())


def _pyfunc_kind(prediction: Any) -> KindInfo:
    """Kind from a prediction: 2-D is multi-output, float regression, anything else labels."""
    if isinstance(prediction, pd.DataFrame) and prediction.shape[1] > 1:
        names = output_column_names(prediction.columns)
        return KindInfo(ModelKind.MULTI_OUTPUT, "predict", (), names)
    values = np.asarray(prediction)
    if values.ndim == 2 and values.shape[1] > 1:
        names = tuple(f"C{i}" for i in range(values.shape[1]))
        return KindInfo(ModelKind.MULTI_OUTPUT, "predict", (), names)
    if values.dtype.kind == "f":
        return KindInfo(ModelKind.REGRESSION, "predict", (), ())
    return KindInfo(ModelKind.CLASSIFICATION, "predict", (), ())


def predict_rows(model: Any, kind: ModelKind, method: str, frame: pd.DataFrame) -> list[Row]:
    """The model's own predictions on ``frame``, as output tuples."""
    return list(zip(*predict_columns(model, kind, method, frame), strict=True))


def predict_columns(
    model: Any, kind: ModelKind, method: str, frame: pd.DataFrame
) -> list[list[Any]]:
    """The model's own predictions on ``frame``, one list per prediction column."""
    if kind is ModelKind.CLASSIFICATION:
        labels = np.asarray(model.predict(frame))
        has_proba = hasattr(model, "predict_proba") and hasattr(model, "classes_")
        probabilities = (
            np.asarray(model.predict_proba(frame), dtype=np.float64) if has_proba else None
        )
        return columns_from(kind, labels, probabilities)
    values = np.asarray(getattr(model, method)(frame))
    if kind is ModelKind.CLUSTERING:
        return columns_from(kind, values, None)
    return columns_from(kind, values.astype(np.float64), None)
