"""Converting estimators to ONNX: skl2onnx for scikit-learn, onnxmltools for XGBoost/LightGBM.

Each converter is tried with the input layouts and precisions that may fit; the
caller checks every candidate against the model and keeps the first that agrees.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import onnx
import onnxmltools
import onnxruntime as ort
from onnxmltools.convert.common.data_types import FloatTensorType as MlFloatTensorType
from skl2onnx import convert_sklearn
from skl2onnx.common.data_types import DoubleTensorType, FloatTensorType, StringTensorType

from shared.scoring.flavors import KindInfo, LoadedModel
from shared.scoring.kinds import Column, ModelKind


@dataclass(frozen=True)
class Conversion:
    """ONNX candidates (most precise first) and why the other attempts failed."""

    candidates: tuple[bytes, ...]
    failures: tuple[str, ...]


def convert(loaded: LoadedModel, info: KindInfo, inputs: tuple[Column, ...]) -> Conversion:
    """Every ONNX model that the converters produce and onnxruntime can load."""
    if loaded.flavor == "sklearn":
        attempts = _sklearn_attempts(loaded.model, info, inputs)
    elif loaded.flavor in ("xgboost", "lightgbm"):
        if info.method == "transform" or any(c.sql_type.is_text for c in inputs):
            reason = "onnxmltools converts only numeric inputs with predict or predict_proba"
            return Conversion((), (reason,))
        attempts = _boosting_attempts(loaded.flavor, loaded.model, inputs)
    else:
        return Conversion((), (f"no ONNX converter for the {loaded.flavor} flavor",))
    candidates: list[bytes] = []
    failures: list[str] = []
    for label, attempt in attempts:
        # Converters fail with many exception types (missing shape calculator,
        # unsupported option, NotImplementedError...): each only means "not this way".
        try:
            model = attempt()
            payload = _keep_outputs(model, info).SerializeToString()
            ort.InferenceSession(payload, providers=["CPUExecutionProvider"])
        except Exception as exc:
            failures.append(f"{label}: {type(exc).__name__}: {exc}")
            continue
        candidates.append(payload)
    return Conversion(tuple(candidates), tuple(failures))


Attempt = tuple[str, Callable[[], onnx.ModelProto]]


def _sklearn_attempts(model: Any, info: KindInfo, inputs: tuple[Column, ...]) -> Iterator[Attempt]:
    options = (
        {id(model): {"zipmap": False}} if info.classes or info.method == "predict_proba" else {}
    )
    has_text = any(c.sql_type.is_text for c in inputs)
    for tensor_type in (DoubleTensorType, FloatTensorType):
        layouts = [("one input per column", _per_column_types(inputs, tensor_type))]
        if not has_text:
            layouts.insert(0, ("one input", [("X", tensor_type([None, len(inputs)]))]))
        for layout, initial_types in layouts:

            def attempt(initial_types: list[tuple[str, Any]] = initial_types) -> onnx.ModelProto:
                return convert_sklearn(model, initial_types=initial_types, options=options)

            yield f"skl2onnx ({layout}, {tensor_type.__name__})", attempt


def _per_column_types(inputs: tuple[Column, ...], tensor_type: type) -> list[tuple[str, Any]]:
    return [
        (c.name, StringTensorType([None, 1]) if c.sql_type.is_text else tensor_type([None, 1]))
        for c in inputs
    ]


def _boosting_attempts(flavor: str, model: Any, inputs: tuple[Column, ...]) -> Iterator[Attempt]:
    initial_types = [("X", MlFloatTensorType([None, len(inputs)]))]
    if flavor == "xgboost":
        # onnxmltools reads only the default feature names f0, f1...; inputs go by position.
        unnamed = copy.deepcopy(model)
        unnamed.get_booster().feature_names = None
        yield (
            "onnxmltools (xgboost)",
            lambda: onnxmltools.convert_xgboost(unnamed, initial_types=initial_types),
        )
    else:
        yield (
            "onnxmltools (lightgbm)",
            lambda: onnxmltools.convert_lightgbm(model, initial_types=initial_types, zipmap=False),
        )


def _keep_outputs(model: onnx.ModelProto, info: KindInfo) -> onnx.ModelProto:
    """Keep only the outputs the runtime reads, in its order.

    Classification: label and probabilities; regression, clustering: the first
    output; multi-output: the last (probabilities, KMeans distances, or the only one).
    """
    outputs = list(model.graph.output)
    if info.kind is ModelKind.CLASSIFICATION:
        keep = outputs[:2] if info.output_names else outputs[:1]
    elif info.kind is ModelKind.MULTI_OUTPUT:
        keep = outputs[-1:]
    else:
        keep = outputs[:1]
    del model.graph.output[:]
    model.graph.output.extend(keep)
    return model
