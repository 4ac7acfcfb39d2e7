"""Scoring rows with a stored representation: onnxruntime, or MLflow pyfunc as the fallback.

Only numpy and onnxruntime are imported here, because this module runs inside
PostgreSQL's PL/Python; the pyfunc fallback imports MLflow when it is first used.

NULL features: a numeric NULL is NaN, which tree models (XGBoost, LightGBM,
forests) treat as a missing value and other models turn into NaN outputs. A text
NULL is scored as the empty string, which an encoder sees as an unknown category
(``OneHotEncoder(handle_unknown="ignore")`` gives all zeros). The pyfunc
fallback passes NULLs to the model as pandas does (NaN, or ``None`` in text).
Outputs: NaN becomes NULL (``None``), and a classification row whose
probabilities hold a NaN gets a NULL label as well, since its argmax means nothing.
"""

from __future__ import annotations

import io
import math
import os
import sys
import tempfile
import threading
import zipfile
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TypeAlias

import numpy as np
import onnxruntime as ort

from shared.errors import InvalidPayload
from shared.scoring.kinds import Column, ModelKind, SqlType
from shared.scoring.representation import Representation, RepresentationFormat

Batch: TypeAlias = Mapping[str, Sequence[Any]] | Sequence[Sequence[Any]] | np.ndarray
Row: TypeAlias = tuple[Any, ...]

_ONNX_DTYPES = {"tensor(double)": np.float64, "tensor(float)": np.float32, "tensor(string)": object}


def columns_from(
    kind: ModelKind, primary: np.ndarray, probabilities: np.ndarray | None
) -> list[list[Any]]:
    """The prediction columns as lists (what a set-based UPDATE binds), NaN turned into ``None``.

    ``primary`` holds the labels (classification, clustering), the values
    (regression) or the 2-D outputs (multi-output); ``probabilities`` the class
    probabilities of a classifier, when it has them. A classification row whose
    probabilities hold a NaN gets a NULL label as well, since its argmax means nothing.
    """
    if kind is ModelKind.CLASSIFICATION:
        labels = _labels(primary.reshape(-1))
        if probabilities is None:
            return [labels]
        probs = np.asarray(probabilities, dtype=np.float64)
        unknown: np.ndarray = np.asarray(np.isnan(probs).any(axis=1))
        if unknown.any():
            gone = unknown.tolist()
            labels = [None if bad else label for label, bad in zip(labels, gone, strict=True)]
            probs = np.where(unknown[:, None], np.nan, probs)
        return [labels, *(_numbers(probs[:, j]) for j in range(probs.shape[1]))]
    if kind is ModelKind.REGRESSION:
        return [_numbers(primary.reshape(-1))]
    if kind is ModelKind.CLUSTERING:
        return [[int(v) for v in primary.reshape(-1).tolist()]]
    matrix = np.asarray(primary, dtype=np.float64).reshape(len(primary), -1)
    return [_numbers(matrix[:, j]) for j in range(matrix.shape[1])]


def _labels(values: np.ndarray) -> list[str | None]:
    """Labels as text: integer and boolean labels in one conversion, others one by one."""
    if values.dtype.kind in "iub":
        return values.astype(str).tolist()
    return [_text(label) for label in values.tolist()]


def _numbers(values: np.ndarray) -> list[float | None]:
    """Floats, with NaN as ``None`` (scanned only when a NaN is there)."""
    values = np.asarray(values, dtype=np.float64)
    missing = np.isnan(values)
    if not missing.any():
        return values.tolist()
    return [None if gone else v for v, gone in zip(values.tolist(), missing.tolist(), strict=True)]


def _text(label: object) -> str | None:
    if label is None or (isinstance(label, float) and math.isnan(label)):
        return None
    return label.decode() if isinstance(label, bytes) else str(label)


def _is_null(value: object) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


class Scorer(ABC):
    """Scores batches of rows with one representation; build it with ``from_representation``."""

    def __init__(self, representation: Representation) -> None:
        self.representation = representation

    @staticmethod
    def from_representation(representation: Representation) -> Scorer:
        """The scorer for the representation's format (loads the model once)."""
        if representation.format is RepresentationFormat.ONNX:
            return OnnxScorer(representation)
        if representation.format is RepresentationFormat.MOJO:
            from shared.scoring.jvm import JvmScorer

            return JvmScorer(representation)
        return PyfuncScorer(representation)

    def score(self, batch: Batch) -> list[Row]:
        """Predictions for a batch, one tuple per row in the order of ``outputs``.

        ``batch`` is either a mapping from input name to its column of values
        (other keys are ignored) or a sequence of rows holding the inputs in order.
        """
        return list(zip(*self.score_columns(batch), strict=True))

    def score_columns(self, batch: Batch) -> list[list[Any]]:
        """Like :meth:`score`, but one list per prediction column (for set-based writes)."""
        columns = self._columns(batch)
        if len(columns[0]) == 0:
            return [[] for _ in self.representation.outputs]
        return self._score(columns)

    @abstractmethod
    def _score(self, columns: list[Sequence[Any]]) -> list[list[Any]]: ...

    def _columns(self, batch: Batch) -> list[Sequence[Any]]:
        inputs = self.representation.inputs
        if isinstance(batch, Mapping):
            missing = [c.name for c in inputs if c.name not in batch]
            if missing:
                raise InvalidPayload(f"batch lacks model inputs: {', '.join(missing)}")
            columns = [batch[c.name] for c in inputs]
        else:
            rows = np.asarray(batch, dtype=object) if not isinstance(batch, np.ndarray) else batch
            if rows.size == 0:
                return [[] for _ in inputs]
            if rows.ndim != 2 or rows.shape[1] != len(inputs):
                raise InvalidPayload(
                    f"batch rows must hold the {len(inputs)} model inputs in order, "
                    f"got an array of shape {rows.shape}"
                )
            columns = list(rows.T)
        if len({len(column) for column in columns}) > 1:
            raise InvalidPayload("batch columns differ in length")
        return columns


class OnnxScorer(Scorer):
    """onnxruntime on one thread: the database runs one scorer per session."""

    def __init__(self, representation: Representation) -> None:
        super().__init__(representation)
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        self._session = ort.InferenceSession(
            representation.payload, options, providers=["CPUExecutionProvider"]
        )
        names = [c.name for c in representation.inputs]
        session_inputs = self._session.get_inputs()
        for session_input in session_inputs:
            if session_input.type not in _ONNX_DTYPES:
                raise InvalidPayload(
                    f"ONNX input {session_input.name} has unsupported type {session_input.type}"
                )
        # Either one ONNX input per feature (pipelines over mixed columns) or
        # one input holding all features side by side.
        if all(i.name in names for i in session_inputs):
            self._feeds = [(i.name, [names.index(i.name)], i.type) for i in session_inputs]
        elif len(session_inputs) == 1:
            only = session_inputs[0]
            self._feeds = [(only.name, list(range(len(names))), only.type)]
        else:
            raise InvalidPayload("ONNX model inputs do not match the representation's inputs")

    def _score(self, columns: list[Sequence[Any]]) -> list[list[Any]]:
        feeds = {name: self._feed(columns, indices, kind) for name, indices, kind in self._feeds}
        outputs = self._session.run(None, feeds)
        kind = self.representation.kind
        if kind is ModelKind.CLASSIFICATION:
            labels = outputs[0]
            # skl2onnx encodes boolean classes as 0/1.
            if self.representation.classes == ("False", "True") and labels.dtype.kind == "i":
                labels = labels.astype(bool)
            return columns_from(kind, labels, outputs[1] if len(outputs) > 1 else None)
        return columns_from(kind, outputs[-1], None)

    def _feed(self, columns: list[Sequence[Any]], indices: list[int], onnx_type: str) -> np.ndarray:
        """One ONNX input: the columns side by side, in the input's element type."""
        dtype = _ONNX_DTYPES[onnx_type]
        if dtype is not object and len(indices) > 1:
            # All numeric: one conversion of every value (None becomes NaN).
            try:
                matrix = np.array([columns[i] for i in indices], dtype=np.float64).T
                return np.ascontiguousarray(matrix, dtype=dtype)
            except (TypeError, ValueError):
                pass  # name the column that is not numeric, below
        inputs = self.representation.inputs
        return np.column_stack([self._array(inputs[i], columns[i], onnx_type) for i in indices])

    @staticmethod
    def _array(column: Column, values: Sequence[Any], onnx_type: str) -> np.ndarray:
        dtype = _ONNX_DTYPES[onnx_type]
        if dtype is object:
            return np.array(["" if _is_null(v) else str(v) for v in values], dtype=object)
        try:
            return np.asarray(np.array(values, dtype=np.float64), dtype=dtype)
        except (TypeError, ValueError) as exc:
            raise InvalidPayload(f"input {column.name} is not numeric: {exc}") from exc


class PyfuncScorer(Scorer):
    """The MLflow model itself, through the flavor's own predict methods.

    The payload is the model's directory as a zip archive (``model_archive``), so
    scoring needs no tracking server: it is unpacked once per checksum.
    """

    def __init__(self, representation: Representation) -> None:
        super().__init__(representation)
        try:
            import_mlflow()
            from shared.scoring.flavors import load_model
        except ImportError as exc:
            raise InvalidPayload(
                f"scoring a {representation.flavor} model without ONNX needs MLflow here, "
                f"and this Python ({sys.executable}) cannot import {exc.name}"
            ) from exc
        path = unpack_model(representation.payload, representation.checksum)
        self._model = load_model(str(path)).model

    def _score(self, columns: list[Sequence[Any]]) -> list[list[Any]]:
        import pandas as pd

        from shared.scoring.flavors import predict_columns

        frame = pd.DataFrame(
            {
                column.name: _pandas_values(column.sql_type, values)
                for column, values in zip(self.representation.inputs, columns, strict=True)
            }
        )
        rep = self.representation
        return predict_columns(self._model, rep.kind, rep.method, frame)


def _pandas_values(sql_type: SqlType, values: Sequence[Any]) -> np.ndarray:
    if sql_type is SqlType.DOUBLE:
        return np.array(values, dtype=np.float64)
    if sql_type in (SqlType.INTEGER, SqlType.BIGINT) and not any(_is_null(v) for v in values):
        return np.array(values, dtype=np.int64)
    if sql_type in (SqlType.INTEGER, SqlType.BIGINT):
        return np.array(values, dtype=np.float64)
    return np.array(list(values), dtype=object)


_MLFLOW_IMPORT = threading.Lock()


def import_mlflow() -> None:
    """Import MLflow once, under a lock: two threads importing it at the same time
    (a deploy job and the async scorer) see half-initialised modules and fail."""
    with _MLFLOW_IMPORT:
        import mlflow.models
        import mlflow.pyfunc  # noqa: F401


def model_archive(directory: Path) -> bytes:
    """A model directory as zip bytes, the same bytes for the same files (stable checksum)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(p for p in directory.rglob("*") if p.is_file()):
            info = zipfile.ZipInfo(path.relative_to(directory).as_posix(), (1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, path.read_bytes())
    return buffer.getvalue()


def unpack_model(payload: bytes, checksum: str) -> Path:
    """Unpack a ``model_archive`` once per checksum under the temp directory; its path.

    The directory is the user's own (``mlmanager-models-<uid>``, mode 0700): the
    database server and the worker may share a machine, and nobody else may
    swap the files of a model that will be unpickled.
    """
    root = Path(tempfile.gettempdir()) / f"mlmanager-models-{os.getuid()}"
    target = root / checksum
    if not target.is_dir():
        root.mkdir(mode=0o700, parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{checksum[:12]}-", dir=root))
        with zipfile.ZipFile(io.BytesIO(payload)) as archive:
            archive.extractall(staging)
        try:
            os.rename(staging, target)
        except OSError:  # another process unpacked it first
            if not target.is_dir():
                raise
    return target
