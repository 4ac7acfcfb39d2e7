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
import os
import sys
import tempfile
import threading
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from shared.errors import InvalidPayload
from shared.scoring.columns import columns_from, is_null
from shared.scoring.kinds import Column, ModelKind, SqlType
from shared.scoring.representation import Representation, RepresentationFormat
from shared.scoring.scorer import Scorer

_ONNX_DTYPES = {"tensor(double)": np.float64, "tensor(float)": np.float32, "tensor(string)": object}


def scorer_for(representation: Representation) -> Scorer:
    """The scorer for the representation's format (loads the model once)."""
    if representation.format is RepresentationFormat.ONNX:
        return OnnxScorer(representation)
    if representation.format is RepresentationFormat.MOJO:
        from shared.scoring.jvm import JvmScorer

        return JvmScorer(representation)
    return PyfuncScorer(representation)


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
            return np.array(["" if is_null(v) else str(v) for v in values], dtype=object)
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
    if sql_type in (SqlType.INTEGER, SqlType.BIGINT) and not any(is_null(v) for v in values):
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
