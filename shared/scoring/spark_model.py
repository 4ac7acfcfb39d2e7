"""Spark ML ``PipelineModel``s (MLflow's ``spark`` flavor): converted to ONNX, checked against
``transform``.

The worker starts a local Spark session (``local[1]``) to load the pipeline, to
convert it with onnxmltools' Spark ML converter and to compute the pipeline's own
predictions on the check rows, and stops it when the build ends
(``SparkEstimator.close``); the database only runs the ONNX model.

Only the stages of ``SUPPORTED_STAGES`` are taken; any other stage is refused by
name before anything is converted. The pipeline's inputs are the columns its
stages read that no stage writes; the last stage decides the kind (a classifier:
label ``0``, ``1``... as Spark's ``prediction`` index, with its ``probability``; a
regressor; KMeans: the cluster index). A row Spark itself refuses (a NULL feature
into VectorAssembler, an unseen category into StringIndexer with
``handleInvalid="error"``) has no prediction to compare and is left out of the check.

Build-time code: imports pyspark (the ``spark`` extra; Java 17+).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import numpy as np
import onnx
import pandas as pd
from onnx import TensorProto, helper

from shared.errors import ExtraNotInstalled, InvalidPayload
from shared.scoring.kinds import Column, ModelKind, output_column_names

SPARK_FLAVOR = "spark"
_CLASSIFIERS = (
    "LogisticRegressionModel",
    "DecisionTreeClassificationModel",
    "RandomForestClassificationModel",
    "GBTClassificationModel",
)
_REGRESSORS = (
    "LinearRegressionModel",
    "DecisionTreeRegressionModel",
    "RandomForestRegressionModel",
    "GBTRegressionModel",
)
_FEATURES = (
    "VectorAssembler",
    "StringIndexerModel",
    "OneHotEncoderModel",
    "StandardScalerModel",
    "MinMaxScalerModel",
    "ImputerModel",
)
SUPPORTED_STAGES = (*_FEATURES, *_CLASSIFIERS, *_REGRESSORS, "KMeansModel")
_SESSION_LOCK = threading.Lock()


def spark_session() -> Any:
    """A local Spark session for one build (no UI, one partition)."""
    try:
        from pyspark.sql import SparkSession
    except ImportError as exc:
        raise ExtraNotInstalled(
            "deploying a Spark ML model needs pyspark in the worker: pip install 'mlmanager[spark]'"
        ) from exc
    with _SESSION_LOCK:
        session = (
            SparkSession.builder.master("local[1]")
            .appName("mlmanager-deploy")
            .config("spark.ui.enabled", "false")
            .config("spark.sql.shuffle.partitions", "1")
            .config("spark.driver.memory", "1g")
            .getOrCreate()
        )
    session.sparkContext.setLogLevel("ERROR")
    return session


def load_spark(path: str) -> tuple[Any, Any]:
    """(the session, the ``PipelineModel`` of the MLflow model in ``path``)."""
    session = spark_session()
    import mlflow.spark

    try:
        return session, mlflow.spark.load_model(path)
    except Exception:
        session.stop()
        raise


def _stage_columns(stage: Any) -> tuple[list[str], list[str]]:
    """(columns a stage reads, columns it writes)."""

    def param(name: str) -> Any:
        return stage.getOrDefault(name) if stage.hasParam(name) and stage.isDefined(name) else None

    reads: list[str] = []
    writes: list[str] = []
    for single, many, into in (
        ("inputCol", "inputCols", reads),
        ("outputCol", "outputCols", writes),
    ):
        if param(single):
            into.append(str(param(single)))
        if param(many):
            into.extend(str(c) for c in param(many))
    if param("featuresCol") and not reads:
        reads.append(str(param("featuresCol")))
    for name in ("predictionCol", "probabilityCol", "rawPredictionCol"):
        if param(name):
            writes.append(str(param(name)))
    return reads, writes


class SparkEstimator:
    """A Spark ML ``PipelineModel`` with the scikit-learn API the build reads."""

    def __init__(self, loaded: tuple[Any, Any]) -> None:
        self.session, self.model = loaded
        stages = list(getattr(self.model, "stages", [self.model]))
        names = [type(s).__name__ for s in stages]
        unsupported = [n for n in names if n not in SUPPORTED_STAGES]
        if unsupported:
            self.close()
            raise InvalidPayload(
                f"the Spark pipeline has stage {', '.join(unsupported)}, which cannot be "
                f"deployed; supported stages: {', '.join(SUPPORTED_STAGES)}"
            )
        last = stages[-1] if stages else None
        if last is None or names[-1] not in (*_CLASSIFIERS, *_REGRESSORS, "KMeansModel"):
            self.close()
            raise InvalidPayload(
                "the Spark pipeline does not end with a model (a classifier, regressor or "
                f"KMeans), it ends with {names[-1] if names else 'nothing'}"
            )
        self.last = last
        if names[-1] in _CLASSIFIERS:
            self.kind = ModelKind.CLASSIFICATION
            self.classes_ = np.arange(int(last.numClasses))
        elif names[-1] == "KMeansModel":
            self.kind, self.classes_ = ModelKind.CLUSTERING, np.arange(0)
        else:
            self.kind, self.classes_ = ModelKind.REGRESSION, np.arange(0)
        written: set[str] = set()
        self.input_names: list[str] = []
        for stage in stages:
            reads, writes = _stage_columns(stage)
            for column in reads:
                if column not in written and column not in self.input_names:
                    self.input_names.append(column)
            written.update(writes)
        # The last frame transformed and its result: the check asks ``predict`` and then
        # ``predict_proba`` of the same rows, one Spark job for both.
        self._last: tuple[pd.DataFrame, pd.DataFrame] | None = None

    def close(self) -> None:
        """Stop the build's Spark session."""
        self.session.stop()

    def output_names(self) -> tuple[str, ...]:
        if self.kind is ModelKind.CLASSIFICATION:
            return output_column_names(self.classes_.tolist())
        return ()

    def check_columns(self, names: list[str]) -> None:
        missing = [n for n in self.input_names if n not in names]
        if missing or len(names) != len(self.input_names):
            raise InvalidPayload(
                f"the Spark pipeline reads columns {', '.join(self.input_names)}; the model's "
                f"signature or sample has {', '.join(names)}"
            )

    def _transform(self, frame: pd.DataFrame) -> pd.DataFrame:
        if self._last is not None and self._last[0] is frame:
            return self._last[1]
        out = self._spark_transform(frame)
        self._last = (frame, out)
        return out

    def _spark_transform(self, frame: pd.DataFrame) -> pd.DataFrame:
        from pyspark.sql.types import DoubleType, StringType, StructField, StructType

        fields = []
        records = []
        for name in frame.columns:
            numeric = pd.api.types.is_numeric_dtype(frame[name].dtype) and not (
                pd.api.types.is_bool_dtype(frame[name].dtype)
            )
            fields.append(StructField(str(name), DoubleType() if numeric else StringType()))
        for row in frame.itertuples(index=False):
            records.append(
                tuple(
                    None
                    if v is None or (isinstance(v, float) and np.isnan(v))
                    else (float(v) if isinstance(f.dataType, DoubleType) else str(v))
                    for v, f in zip(row, fields, strict=True)
                )
            )
        data = self.session.createDataFrame(records, StructType(fields))
        wanted = [self.last.getPredictionCol()]
        if self.kind is ModelKind.CLASSIFICATION:
            wanted.append(self.last.getProbabilityCol())
        try:
            return self.model.transform(data).select(*wanted).toPandas()
        except Exception as exc:  # Spark refuses a NULL or an unseen category: no prediction
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ValueError(f"Spark refuses these rows: {first[:300]}") from exc

    def predict_proba(self, frame: pd.DataFrame) -> np.ndarray:
        out = self._transform(frame)
        return np.array([np.asarray(v.toArray()) for v in out.iloc[:, 1]], dtype=np.float64)

    def predict(self, frame: pd.DataFrame) -> np.ndarray:
        out = self._transform(frame).iloc[:, 0].to_numpy(dtype=np.float64)
        return out if self.kind is ModelKind.REGRESSION else out.astype(np.int64)


def onnx_attempts(
    estimator: SparkEstimator, inputs: tuple[Column, ...]
) -> Iterator[tuple[str, Any]]:
    """The ONNX conversion of the pipeline (onnxmltools, with our converters for the
    stages it gets wrong: ``spark_onnx``), one input per column."""

    def attempt() -> onnx.ModelProto:
        from onnxmltools import convert_sparkml
        from onnxmltools.convert.common.data_types import FloatTensorType, StringTensorType

        from shared.scoring import spark_onnx

        spark_onnx.register()

        initial_types = [
            (
                c.name,
                StringTensorType([None, 1]) if c.sql_type.is_text else FloatTensorType([None, 1]),
            )
            for c in inputs
        ]
        converted = convert_sparkml(
            estimator.model, "spark-pipeline", initial_types, spark_session=estimator.session
        )
        return _outputs_as_read(_float_concats(converted), estimator)

    yield "onnxmltools (sparkml)", attempt


def _float_concats(proto: onnx.ModelProto) -> onnx.ModelProto:
    """Every input of a Concat (a VectorAssembler) cast to float32.

    onnxmltools' StringIndexer gives int64 indices, which its VectorAssembler
    concatenates with float32 numbers: a graph onnxruntime refuses.
    """
    nodes: list[onnx.NodeProto] = []
    for node in proto.graph.node:
        if node.op_type == "Concat":
            for i, name in enumerate(node.input):
                cast = f"{name}_as_float_{len(nodes)}"
                nodes.append(helper.make_node("Cast", [name], [cast], to=TensorProto.FLOAT))
                node.input[i] = cast
        nodes.append(node)
    del proto.graph.node[:]
    proto.graph.node.extend(nodes)
    return proto


def _outputs_as_read(proto: onnx.ModelProto, estimator: SparkEstimator) -> onnx.ModelProto:
    """The prediction (an int64 label or cluster, a double value) and the double
    probabilities, as the runtime reads them, in that order."""
    graph = proto.graph
    by_name = {o.name: o for o in graph.output}
    prediction = estimator.last.getPredictionCol()
    if prediction not in by_name:
        raise ValueError(f"the converted pipeline has no {prediction} output")
    integer = estimator.kind is not ModelKind.REGRESSION
    graph.node.append(
        helper.make_node(
            "Cast",
            [prediction],
            ["spark_label"],
            to=TensorProto.INT64 if integer else TensorProto.DOUBLE,
        )
    )
    outputs = [
        helper.make_tensor_value_info(
            "spark_label", TensorProto.INT64 if integer else TensorProto.DOUBLE, [None]
        )
    ]
    if estimator.kind is ModelKind.CLASSIFICATION:
        probability = estimator.last.getProbabilityCol()
        if probability not in by_name:
            raise ValueError(f"the converted pipeline has no {probability} output")
        graph.node.append(
            helper.make_node("Cast", [probability], ["spark_proba"], to=TensorProto.DOUBLE)
        )
        outputs.append(
            helper.make_tensor_value_info(
                "spark_proba", TensorProto.DOUBLE, [None, len(estimator.classes_)]
            )
        )
    del graph.output[:]
    graph.output.extend(outputs)
    return proto
