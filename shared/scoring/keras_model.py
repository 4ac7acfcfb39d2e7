"""Keras 3 models (MLflow's ``keras`` flavor): exported to ONNX, checked against ``model.predict``.

A Keras model here scores table rows: every model input is a 2-D tensor
``(rows, width)``, and the table's columns feed the inputs in order (the first
``width`` columns the first input, and so on: one input of three features, or a
numeric input of three and a category input of one for an embedding). Float
inputs read the columns as numbers (a NULL is NaN, which gives a NULL
prediction); integer inputs (category indices for an ``Embedding``) read them as
indices, and a NULL or an index outside the embedding's range, which
``model.predict`` refuses, gives a NULL prediction.

The model's kind comes from its last layer: ``softmax`` over several units or
``sigmoid`` over one is a classifier (classes ``0``, ``1``...: the label is the
most probable index, the probabilities are the model's outputs, ``[1 - p, p]``
for a sigmoid); one output otherwise is a regression, several a multi-output.

``KerasEstimator`` gives the model the scikit-learn API the rest of the build
reads (``predict``, ``predict_proba``, ``classes_``); ``onnx_attempts`` exports
it with tf2onnx and wraps the graph so that it takes one double input per table
column and gives the label and the probabilities as the runtime reads them.

Build-time code: imports Keras and TensorFlow (the ``keras`` extra).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx
import pandas as pd
from onnx import TensorProto, helper

from shared.errors import ExtraNotInstalled, InvalidPayload
from shared.scoring.kinds import Column, ModelKind, output_column_names

KERAS_FLAVOR = "keras"
ONNX_OPSET = 17


def load_keras(path: str) -> Any:
    """The Keras model of the MLflow model in ``path`` (TensorFlow backend)."""
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        import mlflow.keras
        import tensorflow  # noqa: F401  (the backend; its absence is the missing extra)
    except ImportError as exc:
        raise ExtraNotInstalled(
            "deploying a Keras model needs Keras and TensorFlow in the worker "
            f"(cannot import {exc.name}): pip install 'mlmanager[keras]'"
        ) from exc
    return mlflow.keras.load_model(path)


@dataclass(frozen=True)
class KerasInput:
    """One model input: its name, width, element type and the embedding size it indexes."""

    name: str
    width: int
    integer: bool
    vocabulary: int | None  # input_dim of the Embedding it feeds, for an integer input


class KerasEstimator:
    """A Keras model with the scikit-learn API the build reads."""

    def __init__(self, model: Any) -> None:
        self.model = model
        self.inputs = _model_inputs(model)
        self.width = sum(i.width for i in self.inputs)
        last = model.layers[-1]
        activation = str(last.get_config().get("activation", ""))
        units = int(model.outputs[0].shape[-1] or 1)
        if len(model.outputs) != 1:
            raise InvalidPayload(
                f"the Keras model has {len(model.outputs)} outputs; a table takes one"
            )
        if activation == "softmax" and units > 1:
            self.kind, self.classes_ = ModelKind.CLASSIFICATION, np.arange(units)
        elif activation == "sigmoid" and units == 1:
            self.kind, self.classes_ = ModelKind.CLASSIFICATION, np.arange(2)
        elif units == 1:
            self.kind, self.classes_ = ModelKind.REGRESSION, np.arange(0)
        else:
            self.kind, self.classes_ = ModelKind.MULTI_OUTPUT, np.arange(0)
        self.units = units

    def output_names(self) -> tuple[str, ...]:
        if self.kind is ModelKind.CLASSIFICATION:
            return output_column_names(self.classes_.tolist())
        if self.kind is ModelKind.MULTI_OUTPUT:
            return tuple(f"C{i}" for i in range(self.units))
        return ()

    def check_columns(self, names: list[str]) -> None:
        """Refuse a column count other than the inputs' total width."""
        if len(names) != self.width:
            described = ", ".join(f"{i.name} ({i.width})" for i in self.inputs)
            raise InvalidPayload(
                f"the Keras model's inputs {described} take {self.width} columns in order, "
                f"and the model's signature or sample has {len(names)}: {', '.join(names)}"
            )

    def raw(self, frame: pd.DataFrame) -> np.ndarray:
        """``model.predict`` on the frame's columns, split over the inputs in order; NaN
        outputs for a row with a missing value (what the database gives for a NULL)."""
        values = frame.to_numpy(dtype=np.float64, na_value=np.nan)
        missing = np.isnan(values).any(axis=1)
        values = np.where(np.isnan(values), 0.0, values)
        feeds = []
        start = 0
        for spec in self.inputs:
            part = values[:, start : start + spec.width]
            start += spec.width
            feeds.append(part.astype(np.int64 if spec.integer else np.float32))
        out = self.model.predict(feeds if len(feeds) > 1 else feeds[0], verbose=0)
        out = np.asarray(out, dtype=np.float64).reshape(len(frame), -1)
        out[missing] = np.nan
        return out

    def predict_proba(self, frame: pd.DataFrame) -> np.ndarray:
        out = self.raw(frame)
        return np.hstack([1.0 - out, out]) if self.units == 1 else out

    def predict(self, frame: pd.DataFrame) -> np.ndarray:
        if self.kind is ModelKind.CLASSIFICATION:
            return np.argmax(self.predict_proba(frame), axis=1)
        out = self.raw(frame)
        return out.reshape(-1) if self.kind is ModelKind.REGRESSION else out


def _model_inputs(model: Any) -> tuple[KerasInput, ...]:
    vocabularies = _embedding_sizes(model)
    found = []
    for tensor in model.inputs:
        shape = tuple(tensor.shape)
        if len(shape) != 2 or shape[1] is None:
            raise InvalidPayload(
                f"Keras input {tensor.name} has shape {shape}; a table feeds (rows, width) inputs"
            )
        integer = "int" in str(tensor.dtype)
        name = str(tensor.name)
        found.append(KerasInput(name, int(shape[1]), integer, vocabularies.get(name)))
    return tuple(found)


def _embedding_sizes(model: Any) -> dict[str, int]:
    """Input name -> ``input_dim`` of the Embedding layer reading that input directly."""
    sizes: dict[str, int] = {}
    for layer in model.layers:
        if type(layer).__name__ != "Embedding":
            continue
        for node in getattr(layer, "_inbound_nodes", []):
            for tensor in node.input_tensors:
                name = str(tensor.name)
                if name in {str(t.name) for t in model.inputs}:
                    sizes[name] = min(sizes.get(name, layer.input_dim), int(layer.input_dim))
    return sizes


def onnx_attempts(
    estimator: KerasEstimator, inputs: tuple[Column, ...]
) -> Iterator[tuple[str, Any]]:
    """The ONNX export of the model (tf2onnx), wrapped to take the table's columns."""

    def attempt() -> onnx.ModelProto:
        return _wrapped(_export(estimator), estimator, inputs)

    yield f"tf2onnx (opset {ONNX_OPSET})", attempt


def _export(estimator: KerasEstimator) -> onnx.ModelProto:
    import tensorflow as tf
    import tf2onnx

    spec = [
        tf.TensorSpec((None, i.width), tf.int64 if i.integer else tf.float32, name=f"in{n}")
        for n, i in enumerate(estimator.inputs)
    ]
    model = estimator.model

    @tf.function(input_signature=spec)
    def forward(*tensors: Any) -> Any:
        return model(list(tensors) if len(tensors) > 1 else tensors[0])

    proto, _ = tf2onnx.convert.from_function(forward, input_signature=spec, opset=ONNX_OPSET)
    return proto


def _wrapped(
    proto: onnx.ModelProto, estimator: KerasEstimator, inputs: tuple[Column, ...]
) -> onnx.ModelProto:
    """The exported graph behind one double ``[rows, 1]`` input per column, giving the
    label and double probabilities (classifier) or the double outputs.

    NaN (a NULL) and, for integer inputs, indices outside the embedding are replaced
    by 0 before the cast, and those rows' outputs set to NaN (NULL): TensorFlow's own
    arithmetic on NaN is not onnxruntime's (its Relu makes NaN 0), and
    ``model.predict`` refuses an index outside the embedding.
    """
    graph = proto.graph
    exported = [i.name for i in graph.input]
    if len(exported) != len(estimator.inputs):
        # Keras' Normalization layer: tf2onnx leaves its mean and variance as inputs.
        left = ", ".join(exported[len(estimator.inputs) :])
        raise ValueError(f"the export left model variables as inputs ({left})")
    before: list[onnx.NodeProto] = []
    after: list[onnx.NodeProto] = []
    initializers: list[onnx.TensorProto] = [
        helper.make_tensor("kz_zero", TensorProto.DOUBLE, [], [0.0]),
        helper.make_tensor("kz_one", TensorProto.DOUBLE, [], [1.0]),
        helper.make_tensor("kz_nan", TensorProto.DOUBLE, [], [float("nan")]),
    ]
    bad_flags: list[str] = []
    start = 0
    for n, (spec, exported_name) in enumerate(zip(estimator.inputs, exported, strict=True)):
        columns = [c.name for c in inputs[start : start + spec.width]]
        start += spec.width
        joined = f"kz_joined_{n}"
        before.append(helper.make_node("Concat", columns, [joined], axis=1))
        bad = f"kz_bad_{n}"
        before.append(helper.make_node("IsNaN", [joined], [f"kz_nan_{n}"]))
        conditions = [f"kz_nan_{n}"]
        if spec.integer:
            before.append(helper.make_node("Less", [joined, "kz_zero"], [f"kz_low_{n}"]))
            conditions.append(f"kz_low_{n}")
        if spec.integer and spec.vocabulary is not None:
            top = f"kz_top_{n}"
            initializers.append(
                helper.make_tensor(top, TensorProto.DOUBLE, [], [spec.vocabulary - 1.0])
            )
            before.append(helper.make_node("Greater", [joined, top], [f"kz_high_{n}"]))
            conditions.append(f"kz_high_{n}")
        while len(conditions) > 1:
            merged = f"{conditions[0]}_or"
            before.append(helper.make_node("Or", conditions[:2], [merged]))
            conditions = [merged, *conditions[2:]]
        before.append(helper.make_node("Where", [conditions[0], "kz_zero", joined], [f"kz_ok_{n}"]))
        element = TensorProto.INT64 if spec.integer else TensorProto.FLOAT
        before.append(helper.make_node("Cast", [f"kz_ok_{n}"], [exported_name], to=element))
        before.append(
            helper.make_node("Cast", [conditions[0]], [f"kz_badd_{n}"], to=TensorProto.DOUBLE)
        )
        before.append(helper.make_node("ReduceMax", [f"kz_badd_{n}"], [bad], keepdims=1, axes=[1]))
        bad_flags.append(bad)
    raw = graph.output[0].name
    after.append(helper.make_node("Cast", [raw], ["kz_out"], to=TensorProto.DOUBLE))
    values = "kz_out"
    if bad_flags:
        total = bad_flags[0]
        for flag in bad_flags[1:]:
            after.append(helper.make_node("Max", [total, flag], [f"{flag}_max"]))
            total = f"{flag}_max"
        after.append(helper.make_node("Greater", [total, "kz_zero"], ["kz_unknown"]))
        after.append(helper.make_node("Where", ["kz_unknown", "kz_nan", values], ["kz_masked"]))
        values = "kz_masked"
    rows = None
    if estimator.kind is ModelKind.CLASSIFICATION:
        probabilities = values
        if estimator.units == 1:
            after.append(helper.make_node("Sub", ["kz_one", values], ["kz_first"]))
            after.append(helper.make_node("Concat", ["kz_first", values], ["kz_proba"], axis=1))
            probabilities = "kz_proba"
        after.append(helper.make_node("ArgMax", [probabilities], ["label"], axis=1, keepdims=0))
        after.append(helper.make_node("Identity", [probabilities], ["probabilities"]))
        outputs = [
            helper.make_tensor_value_info("label", TensorProto.INT64, [rows]),
            helper.make_tensor_value_info(
                "probabilities", TensorProto.DOUBLE, [rows, len(estimator.classes_)]
            ),
        ]
    else:
        after.append(helper.make_node("Identity", [values], ["values"]))
        outputs = [helper.make_tensor_value_info("values", TensorProto.DOUBLE, [rows, None])]
    nodes = [*before, *graph.node, *after]
    del graph.node[:]
    graph.node.extend(nodes)
    graph.initializer.extend(initializers)
    del graph.input[:]
    graph.input.extend(
        helper.make_tensor_value_info(c.name, TensorProto.DOUBLE, [rows, 1]) for c in inputs
    )
    del graph.output[:]
    graph.output.extend(outputs)
    onnx.checker.check_model(proto)
    return proto
